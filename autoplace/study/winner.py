"""Choosing the winner of a search, so that dev noise does not choose it: the best trial by dev, or the top
templates confirmed over seeds (--confirm-top), judged by k-fold over train ∪ dev (--select cv), or averaged
(--ensemble: the top k, or the winner with its dev ties); and the bootstrap interval that says which trials dev
cannot tell from the winner.

A 32-example dev set has a standard error of about 8 points, and the best of 30 trials on it is biased upward (RTE:
a search picked a template at dev 78.1 that scored 51.6 on test). The remedies follow Perez et al. 2021 ("True
Few-Shot Learning"): cross-validation lets every example judge, not only dev's 32; the interval names the ties.
The held-out test split is read by none of this.
"""
from __future__ import annotations

import dataclasses
import json
import random
import statistics

import optuna
from optuna.trial import TrialState

from .. import ensemble
from ..config import CV_TOP, TIED, Plan, SearchConfig, configs
from ..errors import AutoplaceError
from ..runner import PromptRun, fit, metadata, prepare
from ..template import zero_shot
from ..tasks.base import units
from .bootstrap import bootstrap_scores, compare, percentile_interval
from .trials import load_trial, ranked_trials

def judge_dev(run: PromptRun, study: optuna.Study, winner: int | None) -> tuple[tuple[float, float], list[int]]:
    """The winner's 90% bootstrap interval of the task's metric on dev, and the completed trials inside it (tied
    with it on dev: their values are that metric too)."""
    predicted, items = run.predictions("dev")
    interval = percentile_interval(bootstrap_scores(run.task, items, predicted)[:, 0])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return interval, [t.number for t in tied_with(interval, complete, winner)]


def choose_winner(cfg: SearchConfig, study: optuna.Study, objective) -> tuple[PromptRun, dict]:
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
                          "std_dev": statistics.pstdev(scores), "one_answer": all(r[3] for r in runs), "runs": runs})
    winner = max(confirmed, key=lambda c: (not c["one_answer"], c["mean_dev"], c["search_dev"]))
    study.set_user_attr("confirm", [{k: v for k, v in c.items() if k != "runs"} for c in confirmed])
    run, meta, *_ = max(winner["runs"], key=lambda r: (not r[3], r[2]))  # dev selects among its seeds too
    meta["confirm"] = {"seeds": cfg.confirm_seeds, "mean_dev": winner["mean_dev"], "std_dev": winner["std_dev"]}
    return run, meta


def ensemble_choice(cfg: SearchConfig, study: optuna.Study, objective):
    """The stored prompts of the trials --ensemble names (members_of), answering together."""
    loaded = {}

    def run_of(trial) -> PromptRun:  # each member rebuilt once, the winner included
        if trial.number not in loaded:
            loaded[trial.number] = load_trial(study, trial, cfg.data_dir, cfg.artifacts, onto=objective)[0]
        return loaded[trial.number]
    members = members_of(study, cfg.ensemble, run_of)
    together = ensemble.Ensemble([run_of(t) for t in members], trials=members)
    return together, {"template": " | ".join(t.user_attrs["template"] for t in members),
                      "dev": together.evaluate("dev")}


def members_of(study: optuna.Study, k: int | str, load_winner) -> list:
    """The trials `--ensemble k` averages: the k best distinct templates, or with `tied` the winner by dev and
    every trial tied with it there. load_winner(trial) gives the winner's PromptRun, which judges the ties."""
    ranked = ranked_trials(study)
    if k == TIED:
        if not ranked:
            raise AutoplaceError(f"study {study.study_name!r} has no completed trial to export")
        return tied_trials(study, ranked, load_winner(ranked[0]))
    members = top_distinct(ranked, k)
    if len(members) < k:
        raise AutoplaceError(f"--ensemble {k}: the study has only {len(members)} distinct completed trial(s); the "
                             "study is kept, use a smaller --ensemble (or `tied`) or run more trials")
    return members


def tied_trials(study: optuna.Study, ranked: list, winner: PromptRun) -> list:
    """The winner (ranked[0]) and the completed trials inside its 90% interval on dev, best first. Dev cannot tell
    them apart, so their average bets on none of them: over 3 searches on each of the 8 tasks it was below the
    best-by-dev trial in 2 of 24 (by at most 1.1) and above it in 15 (up to +8.2; benchmarks/selection.py). A
    trial that gave one answer to all of dev joins only a winner that did too (it ranks below every other)."""
    _, tied = judge_dev(winner, study, ranked[0].number)
    degenerate = ranked[0].user_attrs.get("one_answer", False)
    return [ranked[0], *(t for t in ranked[1:]
                         if t.number in tied and (degenerate or not t.user_attrs.get("one_answer", False)))]


def manual_template(cfg: SearchConfig, objective) -> tuple[PromptRun, dict]:
    """The task's own template zero-shot, with its own words: the user's starting point, which a search's winner
    must beat to be worth taking."""
    prompt, train_cfg = configs(Plan(zero_shot(objective.task.template), encoder="none"), objective.budget, cfg.seed)
    run = prepare(objective.task, objective.backbone, prompt, cfg.data_dir)
    result = fit(run, train_cfg, progress=False)  # no slot: it is scored on dev as it is
    return run, metadata(run, train_cfg, result, None, {"study": cfg.study_name, "manual": True})


def verdict(winner, manual, level: float = 0.9) -> dict:
    """The winner against the manual template on the same dev examples: the difference of the task's metric, its
    paired bootstrap interval, and one word. `tied` when the interval does not exclude zero: dev did not show that
    the search beats the template the user started from."""
    task, metric = winner.task, winner.task.primary_metric
    (won, items), (kept, _) = winner.predictions("dev"), manual.predictions("dev")
    scores = task.score(won, items)[metric], task.score(kept, items)[metric]
    lo, hi, word = compare(task, items, won, kept, level)
    return {"metric": metric, "winner": scores[0], "manual": scores[1], "difference": scores[0] - scores[1],
            "interval": [lo, hi], "level": level, "word": word, "examples": len(items),
            "manual_template": manual.prompt.template}


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


def cross_validate(cfg: SearchConfig, study: optuna.Study, objective, candidates: list):
    """Each candidate trained on k-1 folds of train ∪ dev (its last step kept: nothing else may judge) and scored
    on the fold held out; the best mean wins, then trains on train with dev choosing its checkpoint."""
    folds = fold_tasks(objective.task, cfg.data_dir, cfg.folds, cfg.seed)
    last_step_only = dataclasses.replace(objective.budget, eval_every=objective.budget.steps, eval_examples=0)
    results = []
    for trial in candidates:
        runs = [retrain(cfg, objective, trial, cfg.seed, fold, last_step_only) for fold in folds]
        results.append({"trial": trial.number, "template": trial.user_attrs["template"], "search_dev": trial.value,
                        "one_answer": all(r[3] for r in runs), **summary([r[2] for r in runs])})
    study.set_user_attr("cv", {"folds": cfg.folds, "candidates": results})
    winner = max(results, key=lambda r: (not r["one_answer"], r["mean"], r["search_dev"]))
    run, meta, *_ = retrain(cfg, objective, next(t for t in candidates if t.number == winner["trial"]), cfg.seed)
    meta["cv"] = {"folds": cfg.folds, "mean": winner["mean"], "std": winner["std"]}
    return run, meta


def retrain(cfg: SearchConfig, objective, trial: optuna.trial.FrozenTrial, seed: int, task=None,
            budget=None):
    """A trial's plan trained afresh with another seed (or on another task's splits, or another budget): (the run,
    its metadata, its dev score, whether it gave one answer to all of dev)."""
    plan = objective.space.plan_of(trial, objective.backbone.causal)
    prompt, train_cfg = configs(plan, budget or objective.budget, seed)
    run = prepare(task or objective.task, objective.backbone, prompt, cfg.data_dir)
    result = fit(run, train_cfg, progress=False)
    meta = metadata(run, train_cfg, result, None,
                    {"study": cfg.study_name, "trial": trial.number, "confirm_seed": seed})
    return run, meta, result.dev[objective.task.primary_metric], result.one_answer


@dataclasses.dataclass
class FoldSource:
    """train ∪ dev, split into the folds that train and the fold that judges; the test split does not exist here."""
    pooled: object
    train_rows: list[int]
    held_rows: list[int]

    def load(self, split: str, data_dir):
        if split == "test":
            raise AutoplaceError("cross-validation never reads the test split")
        return self.pooled.select(self.train_rows if split == "train" else self.held_rows)


def fold_tasks(task, data_dir: str | None, k: int, seed: int) -> list:
    """k copies of the task: copy i trains on every fold but i, and its dev split is fold i.

    A grouped task (MultiRC) is split by question, never inside one, so every held-out question is whole for exact
    match; its group ids are prefixed by split, so a train and a dev question that share an id stay apart."""
    import datasets
    columns = task.columns
    parts = [_tagged_groups(task.load_split(split, data_dir).select_columns(columns), task.group_field, split)
             for split in ("train", "dev")]
    pooled = datasets.concatenate_datasets([p.cast(parts[0].features) for p in parts])
    together = units(pooled[task.group_field] if task.group_field else None, len(pooled))
    if len(together) < k:
        what = "questions" if task.group_field else "examples"
        raise AutoplaceError(f"--select cv with {k} folds needs at least {k} {what} in train and dev together; "
                             f"task {task.name} has {len(together)}")
    order = random.Random(seed).sample(together, len(together))
    folds = [[row for unit in order[i::k] for row in unit] for i in range(k)]
    return [dataclasses.replace(task, source=FoldSource(pooled, sorted(r for j, f in enumerate(folds) if j != i
                                                                       for r in f), sorted(folds[i])))
            for i in range(k)]


def _tagged_groups(split, group_field: str | None, name: str):
    if not group_field:
        return split
    return split.map(lambda ex: {group_field: f"{name}/{ex[group_field]}"})


def tied_with(interval: tuple[float, float], trials, winner_number: int | None) -> list:
    """Completed trials whose dev score lies inside the winner's interval: dev cannot tell them apart."""
    lo, hi = interval
    return [t for t in trials if t.number != winner_number and t.value is not None and lo <= t.value <= hi]


def summary(scores: list[float]) -> dict:
    return {"fold_scores": scores, "mean": statistics.mean(scores), "std": statistics.pstdev(scores)}
