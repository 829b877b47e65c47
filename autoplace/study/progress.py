"""What a running search tells its user: one line per finished trial, and on a terminal a bar with an ETA.

A first search on a CPU takes minutes per trial; silence for ten minutes reads as a hang. Lines go to stderr (stdout
carries the final JSON), so logs and CI show them too; `--quiet` turns them off.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..errors import LAST_SAID, say
from .storage import stored_trial

QUIET_SECONDS = 25.0  # the ticker speaks after this much silence, so no gap reaches 30 s (it polls each second)


class Ticker:
    """A search never goes quiet for long: whenever QUIET_SECONDS pass without a line, it says what it is doing (the
    phase, or the trial it trains) and for how long, so a slow screen or trial on a CPU never looks hung."""

    def __init__(self):
        self.what, self.since, self.stop = None, 0.0, threading.Event()

    @contextlib.contextmanager
    def doing(self, what: str):
        """What the search is doing until the block ends; then what it was doing before."""
        before = self.what, self.since
        self.what, self.since = what, time.monotonic()
        try:
            yield
        finally:
            self.what, self.since = before

    @contextlib.contextmanager
    def running(self, enabled: bool):
        if not enabled:
            yield
            return
        self.stop.clear()
        LAST_SAID[0] = time.monotonic()
        thread = threading.Thread(target=self._watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.stop.set()
            thread.join()
            self.what = None

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            if self.what and time.monotonic() - LAST_SAID[0] >= QUIET_SECONDS:
                say(f"still {self.what} ({_duration(time.monotonic() - self.since)} so far)")


TICKER = Ticker()  # one per process: the search's phases and trials tell it what they are doing


class Progress:
    def __init__(self, study: optuna.Study, worker: int, show: bool | None):
        self.total = study.user_attrs["n_trials"]
        self.enabled = show is not False
        self.seconds = {"trained": [], "zero-shot": []}  # this worker's trial times, apart: one is ~100x the other
        # a thread lock, not tqdm's multiprocessing one: when a pool worker raises, joblib kills the others, and
        # their locks would be reported as leaked semaphores after our one-line error
        tqdm.set_lock(threading.RLock())
        on_terminal = self.enabled and worker == 0 and sys.stderr.isatty()
        self.bar = tqdm(total=self.total, desc="trials", disable=not on_terminal, file=sys.stderr)

    def trial_done(self, study: optuna.Study, trial: optuna.Trial, state: str, reason: str | None,
                   seconds: float) -> None:
        trained = stored_trial(study, trial).user_attrs.get("n_prompt_tokens", 1) > 0
        self.seconds["trained" if trained else "zero-shot"].append(seconds)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        self.bar.n = len(finished)
        self.bar.refresh()
        if self.enabled:
            tqdm.write(self.line(study, trial, state, reason, seconds, finished), file=sys.stderr)
            LAST_SAID[0] = time.monotonic()

    def line(self, study, trial, state: str, reason: str | None, seconds: float, finished: list) -> str:
        frozen = stored_trial(study, trial)
        attrs = frozen.user_attrs
        if state == "complete":
            what = f"dev {_metrics(attrs.get('dev'))}"
        elif state == "pruned":
            what = attrs.get("reason", "pruned")
        else:
            what = f"failed: {reason}"
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: (not t.user_attrs.get("one_answer"), t.value)) if complete else None
        left = self.total - len(finished)
        eta = f", ETA {_duration(self.per_trial() * left)} for this worker" if left > 0 else ""
        template = attrs.get("template", "").replace("\n", "⏎")
        words = f" [{attrs['words']}]" if attrs.get("words") else ""
        best_so_far = f"best {best.value:.3f} (trial {best.number})" if best else "no best yet"
        return (f"autoplace: trial {trial.number} {state} ({len(finished)}/{self.total} done{eta}) · "
                f"{attrs.get('placement', '?')} `{template}`{words} · {what} · {attrs.get('steps', 0)} steps · "
                f"{seconds:.0f} s · {best_so_far}")

    def per_trial(self) -> float:
        """Seconds a trial still to come should take: the trials left are trained ones (the zero-shot references
        come first), so a trained trial's mean once there is one."""
        times = self.seconds["trained"] or self.seconds["zero-shot"]
        return sum(times) / len(times) if times else 0.0

    def close(self) -> None:
        self.bar.close()


def _metrics(dev: dict | None) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in (dev or {}).items()) or "–"


def _duration(seconds: float) -> str:
    """Seconds below 90 s, minutes and seconds below 10 min, minutes after: the ticker speaks every 25 s, and its
    lines in a trial's first minutes must not read the same."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 10 else f"{seconds / 60:.0f} min"
