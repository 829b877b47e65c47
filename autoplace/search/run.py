"""`autoplace search` end to end: workers spend the budget, the top templates are confirmed over seeds, the
winner alone is scored on the test split, exported to OUT/best and reported."""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import ensemble
from ..errors import AutoplaceError
from ..plan import configs
from ..runner import PromptRun, export, fit, metadata, prepare
from .lifecycle import say
from .storage import open_storage, redact
from .study import SearchConfig, counts, open_study
from .select import bootstrap_interval, fold_tasks, tied_with
from .select import summary as cv_summary
from .trials import load_trial
from .worker import Objective, work


CV_TOP = 3  # templates cross-validated when --select cv comes without --confirm-top


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
    storage = open_storage(cfg.storage, cfg.storage_patience, wait=True)
    study = optuna.load_study(storage=storage, study_name=cfg.study_name)
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise AutoplaceError(f"study {cfg.study_name!r} has no completed trial; nothing to export "
                             f"(trial states: {counts(study)})")
    n_trials, done, running = study.user_attrs["n_trials"], _done(study), counts(study)["running"]
    if running:  # only live workers elsewhere still hold trials: report what is done, say so
        say(f"{done} of {n_trials} trials are done; {running} still RUNNING in other live workers, so this winner "
            "and report cover the done ones (run the command again later to include them)")
    if cfg.ensemble > 1:
        run, meta = top_ensemble(cfg, study, objective)
    else:
        run, meta = choose_winner(cfg, study, objective)
    interval, tied = judge_dev(run, study, meta.get("trial"))
    meta["test"] = run.evaluate("test")  # the only time the test split is read
    best = (ensemble.from_trials(study, run.trials, Path(cfg.out) / "best", cfg.artifacts, meta)
            if cfg.ensemble > 1 else export(Path(cfg.out) / "best", run, meta))
    study.set_user_attr("final", {"template": meta["template"], "trial": meta.get("trial"), "dev": meta["dev"],
                                  "dev_interval": interval, "tied": tied, "test": meta["test"],
                                  "search_seconds": round(search_seconds, 1)})
    from .report import write_report
    report = write_report(study, cfg.out)
    return {"out": cfg.out, "best": str(best), "report": str(report), "template": meta["template"],
            "dev": meta["dev"], "dev_interval": interval, "tied": tied, "test": meta["test"],
            "search_seconds": round(search_seconds, 1), "study_name": cfg.study_name,
            "trials": counts(study), "done": f"{done} of {n_trials}", "workers": work_done,
            "storage": redact(cfg.storage)}


def judge_dev(run: PromptRun, study: optuna.Study, winner: int | None) -> tuple[tuple[float, float], list[int]]:
    """The winner's 90% bootstrap interval on dev, and the completed trials inside it (tied with it on dev)."""
    predicted, items = run.predictions("dev")
    interval = bootstrap_interval(run.task.kind.hits(run.task, predicted, items))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return interval, [t.number for t in tied_with(interval, complete, winner)]


def _done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def choose_winner(cfg: SearchConfig, study: optuna.Study, objective: Objective) -> tuple[PromptRun, dict]:
    """The best trial by dev; with --confirm-top k, the best of k templates by mean dev over --confirm-seeds runs;
    with --select cv, the best of the top templates by mean score on folds of train ∪ dev."""
    ranked = ranked_trials(study)
    if cfg.select == "cv":
        return cross_validate(cfg, study, objective, top_distinct(ranked, cfg.confirm_top or CV_TOP))
    if cfg.confirm_top <= 0:
        return load_trial(study, ranked[0], objective.cfg.data_dir, onto=objective)
    candidates = top_distinct(ranked, cfg.confirm_top)
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


def top_ensemble(cfg: SearchConfig, study: optuna.Study, objective: Objective):
    """The k best distinct templates' stored prompts, answering together (--ensemble k)."""
    members = top_distinct(ranked_trials(study), cfg.ensemble)
    if len(members) < cfg.ensemble:
        raise AutoplaceError(f"--ensemble {cfg.ensemble}: the study has only {len(members)} distinct completed "
                             "trial(s); the study is kept, re-run with a smaller --ensemble or more --n-trials")
    together = ensemble.Ensemble([load_trial(study, t, cfg.data_dir, cfg.artifacts, onto=objective)[0]
                                  for t in members], trials=members)
    return together, {"template": " | ".join(t.user_attrs["template"] for t in members),
                      "dev": together.evaluate("dev")}


def ranked_trials(study: optuna.Study) -> list:
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                  reverse=True)


def top_distinct(ranked: list, k: int) -> list:
    """The k best trials, one per template, words and prompt settings."""
    candidates, seen = [], set()
    for trial in ranked:
        key = (trial.user_attrs["template"], json.dumps(trial.user_attrs.get("verbalizer")),
               trial.user_attrs.get("calibrate"), trial.params.get("encoder"), trial.params.get("init"))
        if key not in seen:
            seen.add(key)
            candidates.append(trial)
        if len(candidates) == k:
            break
    return candidates


def cross_validate(cfg: SearchConfig, study: optuna.Study, objective: Objective, candidates: list):
    """Each candidate trained on k-1 folds of train ∪ dev (its last step kept: nothing else may judge) and scored
    on the fold held out; the best mean wins, then trains on train with dev choosing its checkpoint."""
    folds = fold_tasks(objective.task, cfg.data_dir, cfg.folds, cfg.seed)
    last_step_only = dataclasses.replace(objective.budget, eval_every=objective.budget.steps, eval_examples=0)
    results = []
    for trial in candidates:
        scores = [retrain(cfg, objective, trial, cfg.seed, fold, last_step_only)[2] for fold in folds]
        results.append({"trial": trial.number, "template": trial.user_attrs["template"], "search_dev": trial.value,
                        **cv_summary(scores)})
    study.set_user_attr("cv", {"folds": cfg.folds, "candidates": results})
    winner = max(results, key=lambda r: (r["mean"], r["search_dev"]))
    run, meta, _ = retrain(cfg, objective, next(t for t in candidates if t.number == winner["trial"]), cfg.seed)
    meta["cv"] = {"folds": cfg.folds, "mean": winner["mean"], "std": winner["std"]}
    return run, meta


def retrain(cfg: SearchConfig, objective: Objective, trial: optuna.trial.FrozenTrial, seed: int, task=None,
            budget=None):
    """A trial's plan trained afresh with another seed (or on another task's splits, or another budget)."""
    plan = objective.space.plan_of(trial, objective.backbone.causal)
    prompt, train_cfg = configs(plan, budget or objective.budget, seed)
    run = prepare(task or objective.task, objective.backbone, prompt, cfg.data_dir)
    result = fit(run, train_cfg, progress=False)
    meta = metadata(run, train_cfg, result, None,
                    {"study": cfg.study_name, "trial": trial.number, "confirm_seed": seed})
    return run, meta, result.dev[objective.task.primary_metric]
