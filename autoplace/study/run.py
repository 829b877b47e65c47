"""`autoplace search` end to end: workers spend the budget, the winner is chosen (winner.py), it alone is scored on
the test split, exported to OUT/best and reported."""
from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import AutoplaceError, say
from ..runner import export
from ..config import SearchConfig
from .opening import open_study
from .storage import counts, open_storage, redact
from .trials import ensemble_from_trials
from .winner import choose_winner, judge_dev, manual_template, ensemble_choice, verdict
from .progress import TICKER
from .worker import Objective, phase, raise_on_sigterm, work


def search(cfg: SearchConfig, task=None) -> dict:
    """task: a Task object to use instead of resolving cfg.task (in-process callers, e.g. benchmarks on subsets)."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    raise_on_sigterm()
    with TICKER.running(cfg.progress is not False):
        return _search(cfg, task, start)


def _search(cfg: SearchConfig, task, start: float) -> dict:
    with phase("loading the backbone"):
        objective = Objective(cfg, cfg.devices[0] if cfg.devices else None, task)  # loads the backbone, once
    if cfg.workers == 1:
        work_done = [work(cfg, 0, task, objective)]
    else:
        from joblib import Parallel, delayed
        with phase("setting up the study (the zero-shot screen, the reference trials)"):
            open_study(cfg, objective)  # create (and screen) before the workers join
        with phase("running trials"):
            work_done = Parallel(n_jobs=cfg.workers, backend="loky")(delayed(work)(cfg, i, task)
                                                                     for i in range(cfg.workers))
    with phase("choosing, testing and exporting the winner"):
        return finish(cfg, objective, time.time() - start, work_done)


def finish(cfg: SearchConfig, objective: Objective, search_seconds: float, work_done: list) -> dict:
    """Once the trials are done: the winner chosen, scored on test (its one reading), exported and reported."""
    storage = open_storage(cfg.storage, cfg.storage_patience, wait=True)
    study = optuna.load_study(storage=storage, study_name=cfg.study_name)
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise AutoplaceError(f"study {cfg.study_name!r} has no completed trial; nothing to export "
                             f"(trial states: {counts(study)})")
    n_trials, done, running = study.user_attrs["n_trials"], _done(study), counts(study)["running"]
    if running:  # only live workers elsewhere still hold trials: report what is done, say so
        say(f"{done} of {n_trials} trials are done; {running} still RUNNING in other live workers, so this winner "
            "and report cover the done ones (run the command again later to include them)")
    averaged = cfg.ensemble != 1
    if averaged:
        run, meta = ensemble_choice(cfg, study, objective)
    else:
        run, meta = choose_winner(cfg, study, objective)
    try:
        manual, manual_meta = manual_template(cfg, objective)
        against = {**verdict(run, manual), "winner_template": meta["template"],  # named even if not exported
                   "winner_trial": meta.get("trial")}
    except AutoplaceError as exc:  # e.g. a task template this backbone cannot read: say so, lose nothing
        say(f"no verdict against the task's own template: {exc}")
        against = {"word": "unavailable", "reason": str(exc)}
    kept_manual = cfg.keep_manual_unless_better and against["word"] not in ("better", "unavailable")
    if kept_manual:  # dev did not show the search beats the user's template: export that one
        say(f"the search's winner is {against['word']} against the task's own template on dev "
            f"({against['difference']:+.3f}); --keep-manual-unless-better exports the task's own template")
        run, meta = manual, manual_meta
    against["exported"] = "manual" if kept_manual else "winner"
    study.set_user_attr("verdict", against)
    interval, tied = judge_dev(run, study, meta.get("trial"))
    meta["test"] = run.evaluate("test")  # the only time the test split is read
    best = (ensemble_from_trials(study, run.trials, Path(cfg.out) / "best", cfg.artifacts, meta)
            if averaged and not kept_manual else export(Path(cfg.out) / "best", run, meta))
    study.set_user_attr("final", {"template": meta["template"], "trial": meta.get("trial"), "dev": meta["dev"],
                                  "dev_interval": interval, "tied": tied, "test": meta["test"],
                                  "averaged": [t.number for t in run.trials] if averaged and not kept_manual else None,
                                  "search_seconds": round(search_seconds, 1)})
    from .report import write_report
    report = write_report(study, cfg.out)
    return {"out": cfg.out, "best": str(best), "report": str(report), "template": meta["template"],
            "dev": meta["dev"], "dev_interval": interval, "tied": tied, "test": meta["test"], "verdict": against,
            "search_seconds": round(search_seconds, 1), "study_name": cfg.study_name,
            "trials": counts(study), "done": f"{done} of {n_trials}", "workers": work_done,
            "storage": redact(cfg.storage)}


def _done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
