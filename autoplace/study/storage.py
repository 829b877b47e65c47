"""Optuna, in one room: storages from a URL, creating or joining a study, the trial queue (topped up under a lock),
claiming a trial, putting it back when its worker is interrupted or dies, and its heartbeat. This is the one module
that touches Optuna's private attributes and methods; each such use names the Optuna version it was checked against
(OPTUNA_CHECKED), so an upgrade is checked here and nowhere else.

Storages: any RDB URL (sqlite, postgresql, mysql) or `journal:///path/to/file.log`. RDB storages get a heartbeat,
so a worker killed mid-trial leaves a trial that the next worker marks failed and retries (Optuna's
RetryHeartbeatStaleTrialCallback); a journal storage has none. A database server (PostgreSQL, MySQL) may restart
mid-study: its storage waits for it (PatientStorage). Passwords never reach a message.

The budget is exact across processes and machines: the process that creates the study fills the queue up to
--n-trials with WAITING trials; workers only ever claim WAITING trials (an atomic state change in the storage) and
stop when none are left; a worker that asks for more tops the queue up under a lock. So K workers finish exactly N.

Ownership is recorded on the trial (owners.py). A trial RUNNING on this host whose process is gone is reclaimed at
once, heartbeat or not; one owned by another host is judged by its heartbeat, which the search waits out (the grace
period) before it retries the trial or concludes that its worker is alive.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import hashlib
import inspect
import logging
import os
import re
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..errors import AutoplaceError
from ..config import SearchConfig
from ..errors import say
from .owners import is_alive, me

OPTUNA_CHECKED = "5.0"  # the Optuna version every private use below was checked against
OWNER_ATTR = "autoplace_worker"
HEARTBEAT_SECONDS = int(os.environ.get("AUTOPLACE_HEARTBEAT", "30"))
MAX_RETRY = 2
SCHEMA_RETRIES = 4
DEFAULT_PATIENCE = SearchConfig.storage_patience  # seconds a worker waits for a database server that went away
MAX_BACKOFF = 10.0


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and reports."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_url(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_storage(url: str, patience: float = DEFAULT_PATIENCE, wait: bool = False) -> optuna.storages.BaseStorage:
    """patience: seconds a database server may stay unreachable before a storage call gives up (not SQLite: a file
    does not restart). wait: wait for it while opening too, as a worker joining a study does; otherwise a server
    that cannot be reached fails at once (a wrong URL should not take minutes to say so)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise AutoplaceError("storage journal: needs a file path, e.g. journal:///tmp/study.log")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if "://" not in url or scheme not in ("sqlite", "postgresql", "mysql"):
        raise AutoplaceError(f"storage {redact(url)!r}: not a storage URL (use sqlite:///file.db, "
                             "postgresql://user:pass@host/db, mysql://... or journal:///file.log)")
    def open_server():
        return _open_rdb(url, PatientStorage, {"pool_pre_ping": True}, patience=patience)
    try:
        if scheme == "sqlite":
            return _open_sqlite(url)
        return patiently(open_server, patience, redact(url)) if wait else open_server()
    except ImportError as exc:
        raise AutoplaceError(f"storage {redact(url)!r}: database driver missing ({exc.name}); "
                             "pip install 'psycopg[binary]' for PostgreSQL") from None
    except AutoplaceError:
        raise
    except Exception as exc:  # sqlalchemy errors
        first = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
        raise AutoplaceError(f"storage {redact(url)!r} cannot be opened: {first}") from None


def _open_sqlite(url: str) -> optuna.storages.RDBStorage:
    Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    storage = _open_rdb(url, optuna.storages.RDBStorage, {"connect_args": {"timeout": 60}})
    with storage.engine.connect() as connection:  # readers (reports, other workers) then never stall the writer
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    return storage


def _open_rdb(url: str, kind: type, engine: dict, **kwargs) -> optuna.storages.RDBStorage:
    """An RDB storage with a heartbeat; two processes creating the schema at once collide, so that is retried."""
    for attempt in range(SCHEMA_RETRIES):
        try:
            return kind(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=2 * HEARTBEAT_SECONDS, heartbeat_stale_trial_callback=(
                            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)), **kwargs)
        except Exception as exc:
            if attempt + 1 < SCHEMA_RETRIES and _is_schema_race(exc):
                time.sleep(1 + attempt)
                continue
            raise


def _is_schema_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "unique constraint", "database is locked"))


class StorageGone(AutoplaceError):
    """The database server stopped answering and did not come back within the patience: the worker stops, and the
    same command resumes the study later (its unfinished trials are reclaimed)."""


class PatientStorage(optuna.storages.RDBStorage):
    """An RDBStorage that waits out a database server restart instead of failing the worker: a call that fails
    because the connection is lost is retried with exponential backoff for up to `patience` seconds, then raises
    StorageGone. pool_pre_ping replaces the dead pooled connections once the server is back.

    Every storage call is retried except the heartbeat, which the Heartbeat thread simply skips when it fails:
    a heartbeat waiting on a dead server would only hold up the worker.
    """

    def __init__(self, url: str, *, patience: float = DEFAULT_PATIENCE, **kwargs):
        self.patience, self.shown_url = patience, redact(url)
        logging.getLogger("optuna.storages._rdb.storage").addFilter(_not_a_lost_connection)
        super().__init__(url, **kwargs)

    def _patiently(self, method, *args, **kwargs):
        if getattr(_nested, "active", False):  # a storage call made by another one: the outer call retries
            return method(self, *args, **kwargs)
        _nested.active = True
        try:
            return patiently(lambda: method(self, *args, **kwargs), self.patience, self.shown_url)
        finally:
            _nested.active = False


def patiently(call, patience: float, shown_url: str):
    """call() again, with exponential backoff, while it fails because the database cannot be reached; after
    `patience` seconds, StorageGone."""
    deadline, delay, failed = time.monotonic() + patience, 0.5, False
    while True:
        try:
            result = call()
        except Exception as exc:
            if not lost_connection(exc):
                if failed:  # it answered, if only to refuse (say, a trial that another worker failed meanwhile)
                    say(f"storage {shown_url!r} is back; going on")
                raise
            if not failed:
                failed = True
                say(f"storage {shown_url!r} is unreachable; retrying for up to {patience:g} s")
            now = time.monotonic()
            if now >= deadline:
                raise StorageGone(f"storage {shown_url!r} went away and did not come back within {patience:g} s; "
                                  "run the same command again to resume") from None
            time.sleep(min(delay, deadline - now))
            delay = min(2 * delay, MAX_BACKOFF)
            continue
        if failed:
            say(f"storage {shown_url!r} is back; going on")
        return result


_nested = threading.local()


def _patient(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._patiently(method, *args, **kwargs)
    return call


# The storage API (BaseStorage) and the private methods Optuna 5.0's trial cache calls on an RDBStorage.
_RETRIED = [name for name, _ in inspect.getmembers(optuna.storages.BaseStorage, inspect.isfunction)
            if not name.startswith("_")] + ["_create_new_trial", "_set_trial_param", "_get_trials",
                                            "_get_best_trial_id", "_get_stale_trial_ids"]
for _name in _RETRIED:
    setattr(PatientStorage, _name, _patient(getattr(optuna.storages.RDBStorage, _name)))


def lost_connection(exc: BaseException | None) -> bool:
    """The database cannot be reached (refused, reset, shutting down, starting up), as opposed to a bad query: this
    error, or one it was raised from or while handling. Optuna wraps errors in StorageInternalError, and SQLAlchemy
    raises PendingRollbackError when Optuna retries a query on a connection that dropped mid-query."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if (isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
                or getattr(exc, "connection_invalidated", False)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _not_a_lost_connection(record: logging.LogRecord) -> bool:
    """Optuna takes a connection lost mid-query for too long a query and logs the error with its SQL; the storage
    says what happened in one line instead."""
    return not record.getMessage().startswith("Caught an error from sqlalchemy")


# -- a study: created or joined, its set-up and queue under one lock ----------------------------------------------

def open_study(url: str, storage, name: str, sampler, pruner, set_up, n_trials: int,
               waiting: str = "is being set up by another process",
               patience: float = DEFAULT_PATIENCE) -> tuple[optuna.Study, bool]:
    """Create the study or join it, under the study's lock; (study, whether this call set it up).

    The creator sets it up (set_up(study): the screen, the references) and fills the queue to n_trials while it
    holds the lock, so a joiner never sees a half-made study as finished. A study that exists without its budget
    was left by a creator that stopped (Ctrl-C, a crash, bad input found late): the lock is free again, and this
    call redoes the set-up at once (set_up must skip what is already there). A joiner that asks for more trials tops
    the queue up under the same lock, so joiners at the same moment never queue more than N."""
    with study_lock(url, name, waiting, patience=patience):
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        if "n_trials" not in study.user_attrs:
            set_up(study)
            fill_queue(study, n_trials)
            study.set_user_attr("n_trials", n_trials)
            return study, True
        if n_trials > study.user_attrs["n_trials"]:  # asked for more: top the queue up
            fill_queue(study, n_trials)
            study.set_user_attr("n_trials", n_trials)
        return study, False


def budget_trials(study: optuna.Study) -> list:
    """Trials that count against the budget: all but failed ones (a failure is retried or reported)."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE,
                                                     TrialState.PRUNED))


def fill_queue(study: optuna.Study, n_trials: int) -> None:
    """Queue empty trials up to n_trials; call it under study_lock (open_study does)."""
    for _ in range(n_trials - len(budget_trials(study))):
        study.enqueue_trial({}, skip_if_exists=False)


def counts(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}


LOCK_NOTE_SECONDS = 30.0  # a process waiting for the lock says so this often


@contextlib.contextmanager
def study_lock(url: str, study_name: str, waiting: str = "is being set up by another process", poll: float = 0.5,
               patience: float = DEFAULT_PATIENCE):
    """A lock per study, held by one process at a time on every machine that shares the storage: a PostgreSQL
    advisory lock or a MySQL named lock on a server, a file lock beside a SQLite or journal file. A process that
    dies releases it (its connection closes, its file lock goes), so a lock is never left behind."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    key = int.from_bytes(hashlib.sha256(f"autoplace:{study_name}".encode()).digest()[:8], "big", signed=True)
    noted = [time.monotonic()]

    def wait():
        if time.monotonic() - noted[0] >= LOCK_NOTE_SECONDS:
            noted[0] = time.monotonic()
            say(f"study {study_name!r} {waiting}; waiting for it")
        time.sleep(poll)

    if scheme in ("postgresql", "mysql"):
        take, give = (("SELECT pg_try_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)") if scheme == "postgresql"
                      else ("SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)"))
        params = {"key": key, "name": f"autoplace-{key & 0xFFFFFFFF:x}"}
        # autocommit: a session lock, held with no transaction open (a server may end idle transactions)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
        try:
            connection = patiently(engine.connect, patience, redact(url))
            try:
                while not connection.execute(sqlalchemy.text(take), params).scalar():
                    wait()
                yield
                try:
                    connection.execute(sqlalchemy.text(give), params)
                except Exception as exc:  # the server went away: so did the lock, with its session
                    if not lost_connection(exc):
                        raise
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        finally:
            engine.dispose()
        return
    path = (url.split(":///", 1)[-1] if scheme == "sqlite"
            else url.removeprefix("journal:").removeprefix("//") if scheme == "journal" else "")
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.autoplace-lock", "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                wait()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- a trial's life: claimed, kept alive, put back -----------------------------------------------------------------
# Optuna 5.0 has no public way to claim a WAITING trial by id atomically, nor to write to a trial that is not the
# study's current Trial object, so these go through the study's storage (Study._storage), its id (Study._study_id)
# and the trial's (Trial._trial_id, FrozenTrial._trial_id): checked against OPTUNA_CHECKED.

def _storage_of(study: optuna.Study):
    return study._storage  # private in Optuna 5.0


def _trial_id(trial) -> int:
    return trial._trial_id  # private in Optuna 5.0 (Trial and FrozenTrial)


def stored_trial(study: optuna.Study, trial) -> optuna.trial.FrozenTrial:
    """The trial as the storage has it now (its user attributes included)."""
    return _storage_of(study).get_trial(_trial_id(trial))


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None):
    """study.tell; a trial that another worker has finished meanwhile (it found the heartbeat stale, as after a
    database outage) raises UpdateFinishedTrialError, like every other write to it, not Optuna's ValueError."""
    try:
        study.tell(trial, value, state)
    except ValueError:
        if stored_trial(study, trial).state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} is already finished") from None
        raise


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (RUNNING in the storage), or None when the budget is spent."""
    storage = _storage_of(study)
    study_id = study._study_id  # private in Optuna 5.0
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(_trial_id(frozen), state=TrialState.RUNNING):
                storage.set_trial_system_attr(_trial_id(frozen), OWNER_ATTR, me())
                return optuna.Trial(study, _trial_id(frozen))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def requeue(study: optuna.Study, trial, reason: str) -> bool:
    """Mark a RUNNING trial failed with its reason and queue a retry of the same parameters; False if it had
    already finished (another process got there first)."""
    storage, trial_id = _storage_of(study), _trial_id(trial)
    frozen = copy.deepcopy(storage.get_trial(trial_id))
    if frozen.state != TrialState.RUNNING:
        return False
    try:
        storage.set_trial_user_attr(trial_id, "reason", reason)
        storage.set_trial_user_attr(trial_id, "failure", reason.split(":")[0])
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    frozen.system_attrs.pop(OWNER_ATTR, None)
    RetryHeartbeatStaleTrialCallback()(study, frozen)  # unlimited: an interruption is not the trial's fault
    return True


def reclaim_orphans(study: optuna.Study) -> list[int]:
    """Put back the trials whose worker on this host is gone, those that a worker claimed but never signed (the
    database went away in between) once they are older than the heartbeat's grace period, then those Optuna finds
    stale by heartbeat (which needs a first heartbeat, so it cannot see unsigned ones)."""
    reclaimed, unsigned = [], []
    grace = grace_period(_storage_of(study))
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.system_attrs.get(OWNER_ATTR)
        if owner and is_alive(owner) is False and requeue(
                study, frozen, f"worker gone: process {owner['pid']} ended without finishing the trial"):
            reclaimed.append(frozen.number)
        elif not owner and grace and _age(frozen) > grace and requeue(
                study, frozen, "unsigned: its worker lost the storage right after claiming it"):
            unsigned.append(frozen.number)
    optuna.storages.fail_stale_trials(study)
    if reclaimed:
        say(f"trial(s) {', '.join(map(str, reclaimed))} were left RUNNING by a process that is gone; "
            "marked failed and queued again")
    if unsigned:
        say(f"trial(s) {', '.join(map(str, unsigned))} were claimed by a worker that lost the storage before it "
            "could sign them; marked failed and queued again")
    return reclaimed + unsigned


def _age(frozen: optuna.trial.FrozenTrial) -> float:
    """Seconds since the trial was claimed (set RUNNING)."""
    return (datetime.now() - frozen.datetime_start).total_seconds() if frozen.datetime_start else 0.0


def running_elsewhere(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose owner is not a live process on this host: live workers elsewhere, or dead ones whose
    heartbeat has not yet gone stale."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if is_alive(t.system_attrs.get(OWNER_ATTR) or {}) is not True]


def wait_for_stale(study: optuna.Study, poll: float = 1.0) -> bool:
    """When only trials RUNNING elsewhere are left, wait out their heartbeat's grace period. True when some came
    back to the queue (their worker was dead), False when none did (their workers are alive, or no heartbeat)."""
    grace = grace_period(_storage_of(study))
    pending = running_elsewhere(study)
    if not pending or not grace:
        return False
    say(f"{len(pending)} trial(s) RUNNING with a recent heartbeat (trial {', '.join(str(t.number) for t in pending)}:"
        f" another worker, or an earlier run that was killed); waiting up to {grace} s before retrying them")
    deadline = time.time() + grace + 2 * poll
    while time.time() < deadline:
        reclaim_orphans(study)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        if not running_elsewhere(study):
            return False
        time.sleep(poll)
    return False


def grace_period(storage) -> int | None:
    """Seconds without a heartbeat after which a RUNNING trial counts as stale; None without a heartbeat."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    backend = getattr(storage, "_backend", storage)  # Optuna 5.0 wraps RDB storages in a private cache
    return (getattr(backend, "grace_period", None) or 2 * interval) if interval else None


class Heartbeat:
    """Records the trial's heartbeat while it runs, so a killed worker's trial is detected as stale."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial):
        self.storage, self.trial_id = _storage_of(study), _trial_id(trial)
        self.interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(self.interval):
            self._beat_once()

    def _beat_once(self):
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception:  # the database is away: skip this beat (the worker's own calls wait for it, or say why)
            pass

    def __enter__(self):
        if self.interval:
            self._beat_once()
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
