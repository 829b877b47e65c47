"""A trial's life in the storage: claimed, kept alive by a heartbeat, owned by one process, and put back in the
queue when that process is interrupted or dies, so a study always ends with exactly its N trials.

Ownership is recorded on the trial (host, pid, process start time). A trial RUNNING on this host whose process is
gone is reclaimed at once, heartbeat or not; one owned by another host is judged by its heartbeat, which the
search waits out (the grace period) before it retries the trial or concludes that its worker is alive.
"""
from __future__ import annotations

import copy
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

OWNER_ATTR = "autoplace_worker"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a worker; the message says what became of its trial."""

    def __init__(self, signal_name: str, message: str = ""):
        super().__init__(message or f"interrupted ({signal_name})")
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        return 128 + (signal.SIGTERM if self.signal_name == "SIGTERM" else signal.SIGINT)


def raise_on_sigterm() -> None:
    """A cluster scheduler stops jobs with SIGTERM: treat it like Ctrl-C, so the running trial is put back."""
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise Interrupted("SIGTERM")
        signal.signal(signal.SIGTERM, handler)


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (Linux; [] elsewhere): [0] the state, [19] the start
    time in clock ticks since boot."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str | None:
    """The process's start time, so a reused pid is not mistaken for ours."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def is_alive(owner: dict) -> bool | None:
    """True/False for a process on this host; None when it runs elsewhere (only its heartbeat can tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    if _proc_stat(int(owner["pid"]))[:1] in (["Z"], ["X"]):  # a zombie: dead, its parent has not yet waited for it
        return False
    now = _start_time(int(owner["pid"]))
    return owner.get("started") is None or now is None or now == owner["started"]


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (RUNNING in the storage), or None when the budget is spent."""
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                storage.set_trial_system_attr(frozen._trial_id, OWNER_ATTR, me())
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def requeue(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Mark a RUNNING trial failed with its reason and queue a retry of the same parameters; False if it had
    already finished (another process got there first)."""
    storage = study._storage
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
    grace = grace_period(study._storage)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.system_attrs.get(OWNER_ATTR)
        if owner and is_alive(owner) is False and requeue(
                study, frozen._trial_id, f"worker gone: process {owner['pid']} ended without finishing the trial"):
            reclaimed.append(frozen.number)
        elif not owner and grace and _age(frozen) > grace and requeue(
                study, frozen._trial_id, "unsigned: its worker lost the storage right after claiming it"):
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
    grace = grace_period(study._storage)
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
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    return (getattr(backend, "grace_period", None) or 2 * interval) if interval else None


class Heartbeat:
    """Records the trial's heartbeat while it runs, so a killed worker's trial is detected as stale."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial):
        self.storage, self.trial_id = study._storage, trial._trial_id
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


def say(message: str) -> None:
    """One line to the user on stderr (stdout carries the search's JSON)."""
    print(f"autoplace: {message}", file=sys.stderr, flush=True)
