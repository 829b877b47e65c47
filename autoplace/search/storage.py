"""Optuna storages from a URL: any RDB URL (sqlite, postgresql, mysql) or `journal:///path/to/file.log`.

RDB storages get a heartbeat, so a worker killed mid-trial leaves a trial that the next worker marks failed and
retries (Optuna's RetryHeartbeatStaleTrialCallback); a journal storage has none. A database server (PostgreSQL,
MySQL) may restart mid-study: its storage waits for it (PatientStorage). Passwords never reach a message.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc

from ..errors import AutoplaceError
from .lifecycle import say

HEARTBEAT_SECONDS = int(os.environ.get("AUTOPLACE_HEARTBEAT", "30"))
MAX_RETRY = 2
SCHEMA_RETRIES = 4
DEFAULT_PATIENCE = 300.0  # seconds a worker waits for a database server that went away
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


# The storage API (BaseStorage) and the private methods Optuna's trial cache calls on an RDBStorage.
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
