"""`autoplace search` end to end: workers spend the budget, the top templates are confirmed over seeds, the
winner alone is scored on the test split, exported to OUT/best and reported."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import AutoplaceError
from ..plan import configs
from ..runner import Prompted, export, fit, metadata, prepare
from .lifecycle import say
from .storage import open_storage, redact
from .study import SearchConfig, counts, open_study
from .trials import load_trial
from .worker import Objective, work


def search(cfg: SearchConfig, task=None) -> dict:
    """task: a Task object to use instead of resolving cfg.task (in-process callers, e.g. benchmarks on subsets)."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    objective = Objective(cfg, cfg.devices[0] if cfg.devices else None, task)  # loads the backbone, once
    if cfg.workers == 1:
        work_done = [work(cfg, 0, task, objective)]
    else:
        from joblib import Parallel, delayed
        open_study(cfg, objective)  # create (and screen) before the workers join
        work_done = Parallel(n_jobs=cfg.workers, backend="loky")(delayed(work)(cfg, i, task)
                                                                 for i in range(cfg.workers))
    search_seconds = time.time() - start
    study = optuna.load_study(storage=open_storage(cfg.storage), study_name=cfg.study_name)
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise AutoplaceError(f"study {cfg.study_name!r} has no completed trial; nothing to export "
                             f"(trial states: {counts(study)})")
    n_trials, done, running = study.user_attrs["n_trials"], _done(study), counts(study)["running"]
    if running:  # only live workers elsewhere still hold trials: report what is done, say so
        say(f"{done} of {n_trials} trials are done; {running} still RUNNING in other live workers, so this winner "
            "and report cover the done ones (run the command again later to include them)")
    run, meta = choose_winner(cfg, study, objective)
    meta["test"] = run.evaluate("test")  # the only time the test split is read
    best = export(Path(cfg.out) / "best", run, meta)
    study.set_user_attr("final", {"template": meta["template"], "trial": meta.get("trial"), "dev": meta["dev"],
                                  "test": meta["test"], "search_seconds": round(search_seconds, 1)})
    from .report import write_report
    report = write_report(study, cfg.out)
    return {"out": cfg.out, "best": str(best), "report": str(report), "template": meta["template"],
            "dev": meta["dev"], "test": meta["test"], "search_seconds": round(search_seconds, 1),
            "trials": counts(study), "done": f"{done} of {n_trials}", "workers": work_done,
            "storage": redact(cfg.storage)}


def _done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def choose_winner(cfg: SearchConfig, study: optuna.Study, objective: Objective) -> tuple[Prompted, dict]:
    """The best trial by dev; with --confirm-top k, the best of k templates by mean dev over --confirm-seeds runs."""
    ranked = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                    key=lambda t: t.value, reverse=True)
    if cfg.confirm_top <= 0:
        return load_trial(study, ranked[0], objective.cfg.data_dir, onto=objective)
    candidates, seen = [], set()
    for trial in ranked:
        key = (trial.user_attrs["template"], trial.params.get("encoder"), trial.params.get("init"))
        if key not in seen:
            seen.add(key)
            candidates.append(trial)
        if len(candidates) == cfg.confirm_top:
            break
    confirmed = []
    for trial in candidates:
        runs = [retrain(cfg, objective, trial, cfg.seed + 1 + i) for i in range(cfg.confirm_seeds)]
        scores = [r[2] for r in runs]
        confirmed.append({"trial": trial.number, "template": trial.user_attrs["template"], "search_dev": trial.value,
                          "seed_devs": scores, "mean_dev": statistics.mean(scores),
                          "std_dev": statistics.pstdev(scores), "runs": runs})
    winner = max(confirmed, key=lambda c: (c["mean_dev"], c["search_dev"]))
    study.set_user_attr("confirm", [{k: v for k, v in c.items() if k != "runs"} for c in confirmed])
    run, meta, _ = max(winner["runs"], key=lambda r: r[2])  # dev selects among the winner's seeds too
    meta["confirm"] = {"seeds": cfg.confirm_seeds, "mean_dev": winner["mean_dev"], "std_dev": winner["std_dev"]}
    return run, meta


def retrain(cfg: SearchConfig, objective: Objective, trial: optuna.trial.FrozenTrial, seed: int):
    plan = objective.space.plan_of(trial, objective.backbone.causal)
    prompt, train_cfg = configs(plan, objective.budget, seed)
    run = prepare(objective.task, objective.backbone, prompt, cfg.data_dir)
    result = fit(run, train_cfg, progress=False)
    meta = metadata(run, train_cfg, result, None,
                    {"study": cfg.study_name, "trial": trial.number, "confirm_seed": seed})
    return run, meta, result.dev[objective.task.primary_metric]
