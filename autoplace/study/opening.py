"""How a search's study begins: its sampler and pruner, its trial budget, and the set-up its creator does (the
zero-shot screen, the reference trials). The storage, the lock and the queue are storage.py's."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict

import optuna

from ..config import PRUNERS, Budget, SearchConfig
from ..errors import AutoplaceError, say
from ..trainer import dev_steps
from . import storage as storage_room
from .space import SearchSpace, Words
from .storage import open_storage, redact

log = logging.getLogger(__name__)
ARTIFACT_ATTR = "autoplace_artifact"
WILCOXON_MIN_EVALUATIONS = 5


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    """TPE over the conditional space: multivariate + grouped. The constant liar keeps concurrent workers apart,
    whether they share this process's machine or only the storage; with one worker it changes nothing."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=5)


def make_pruner(name: str, steps: int, eval_every: int) -> optuna.pruners.BasePruner:
    """Successive halving is the default because it was measured, not assumed: on 24-trial RTE and CB searches at
    two TPE seeds it alone spent under half the unpruned train steps and kept the unpruned winner
    (benchmarks/pruning.py). Median waits for 5 finished trials and a third of the budget: the cautious choice."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(eval_every, steps // 3))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps, reduction_factor=3)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=eval_every, reduction_factor=3)
    if name == "wilcoxon":
        # It tests, step by step, whether this trial's dev curve is below the best trial's. With n paired points and
        # no ties, the smallest one-sided p is 1/2**n, so p < 0.1 needs 4 points, and pruning only saves steps
        # before the last one.
        evaluations = len(dev_steps(steps, eval_every))
        if evaluations < WILCOXON_MIN_EVALUATIONS:
            log.warning(f"autoplace: wilcoxon will rarely prune with {evaluations} dev evaluations per trial (it "
                        f"needs about {WILCOXON_MIN_EVALUATIONS}); lower --eval-every or use median")
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise AutoplaceError(f"unknown pruner {name!r} (use {', '.join(PRUNERS)})")


def open_study(cfg: SearchConfig, objective) -> optuna.Study:
    """Create the study (screen the words, queue its N trials) or join an existing one; re-running resumes, and
    redoes a set-up that an earlier run left unfinished. objective: a worker's Objective (its space, task and
    loaded backbone); its space learns the study's words."""
    space, causal = objective.space, objective.backbone.causal
    storage = open_storage(cfg.storage, cfg.storage_patience, wait=True)  # a worker may join mid-outage
    budget = effective_budget(cfg, space)

    def set_up(study: optuna.Study) -> None:  # under the study's lock; skips what an earlier, stopped run did
        study.set_user_attr("config", {**cfg.to_dict(), "storage": redact(cfg.storage)})
        study.set_user_attr("space", space.path)
        study.set_user_attr("budget", asdict(budget))
        study.set_user_attr("metric", objective.task.primary_metric)  # what the trials' values are
        if space.needs_screen() and "words" not in study.user_attrs:
            from .screen import screen
            at_budget = dataclasses.replace(space, budget=budget)  # the run's --max-length, as its trials have
            kept, record = screen(at_budget, objective.task, objective.backbone, cfg.data_dir,
                                  quiet=cfg.progress is False)
            study.set_user_attr("screen", record)
            study.set_user_attr("words", [w.to_dict() for w in kept])
        fit_space(space, study, objective.backbone)
        references = space.references(causal)
        references = fewer_zero_shot(references, cfg.n_trials)
        queued = {t.user_attrs.get("reference_key") for t in study.get_trials(deepcopy=False)}
        for name, params in references[:cfg.n_trials]:
            key = json.dumps([name, params], sort_keys=True)  # several zero-shot references differ by their words
            if key not in queued:
                study.enqueue_trial(params, user_attrs={"reference": name, "reference_key": key})
        if len(references) > cfg.n_trials:
            dropped = [name for name, _ in references[cfg.n_trials:]]
            study.set_user_attr("dropped_references", dropped)
            say(f"--n-trials {cfg.n_trials} leaves no room for {len(dropped)} of the {len(references)} reference "
                f"trials ({', '.join(dropped)}) nor for any sampled trial")

    study, _ = storage_room.open_study(cfg.storage, storage, cfg.study_name, make_sampler(cfg.seed),
                                       make_pruner(cfg.pruner, budget.steps, budget.eval_every), set_up,
                                       cfg.n_trials, "is being set up by another process (its screen can take minutes)",
                                       cfg.storage_patience)
    fit_space(space, study, objective.backbone)
    return study


def fewer_zero_shot(references: list, n_trials: int) -> list:
    """At most a quarter of the trials (one at least) are zero-shot references, the screen's best words first, so a
    small search mostly trains prompts; the other words stay in the sampler's `words` choice."""
    zero_shot = [r for r in references if r[0] == "zero-shot"]
    cap = max(1, n_trials // 4)
    if len(zero_shot) <= cap:
        return references
    say(f"--n-trials {n_trials}: {cap} of the {len(zero_shot)} zero-shot reference trials run (the screen's best "
        "words first), so that most trials train a prompt; the sampler may still pick the other words")
    return zero_shot[:cap] + [r for r in references if r[0] != "zero-shot"]


def fit_space(space: SearchSpace, study: optuna.Study, backbone) -> None:
    """The space learns what its study sampled from: the screened words (and which of them the references are
    written on), and the backbone's depth where a prompt may enter below the input. A trial's plan is rebuilt only
    by a space fitted this way."""
    space.words = words_of(study)
    space.reference_words = study.user_attrs.get("screen", {}).get("references", {}).get("key")
    space.n_layers = backbone.n_layers if space.needs_layers else 0


def words_of(study: optuna.Study) -> dict[str, Words]:
    """The screened words the study samples from, best first (none when there was nothing to screen)."""
    return {w["key"]: Words(**w) for w in study.user_attrs.get("words", [])}


def effective_budget(cfg: SearchConfig, space: SearchSpace) -> Budget:
    """The space's budget with the command line's overrides."""
    given = {key: getattr(cfg, key) for key in ("steps", "eval_every", "batch_size", "max_length", "patience",
                                                "eval_examples") if getattr(cfg, key) is not None}
    budget = dataclasses.replace(space.budget, **given)
    return dataclasses.replace(budget, eval_every=min(budget.eval_every, budget.steps))


def device_for(worker: int, devices: list[str]) -> str | None:
    return devices[worker % len(devices)] if devices else None
