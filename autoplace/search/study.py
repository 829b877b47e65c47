"""The study: sampler, pruner, the trial budget, and the workers that run trials until it is spent.

The budget is exact across processes and machines: the process that creates the study enqueues the reference
trials and fills the queue up to --n-trials with empty WAITING trials; workers only ever claim WAITING trials
(an atomic state change in the storage) and stop when none are left. So K workers finish exactly N trials.
"""
from __future__ import annotations

import logging
import time
import dataclasses
from dataclasses import asdict, dataclass, field

import optuna
from optuna.trial import TrialState

from ..errors import AutoplaceError
from ..plan import Budget
from ..trainer import dev_steps
from .lifecycle import say
from .space import SearchSpace, Words
from .storage import open_storage, redact

log = logging.getLogger(__name__)
PRUNERS = ("sha", "median", "hyperband", "wilcoxon", "none")
ARTIFACT_ATTR = "autoplace_artifact"
WILCOXON_MIN_EVALUATIONS = 5


@dataclass
class SearchConfig:
    task: str
    space: str
    out: str
    storage: str
    study_name: str
    model: str = "smollm2-135m"
    data_dir: str | None = None
    n_trials: int = 30
    timeout: float | None = None
    seed: int = 0
    pruner: str = "sha"
    workers: int = 1
    devices: list[str] = field(default_factory=list)
    steps: int | None = None
    eval_every: int | None = None
    batch_size: int | None = None
    max_length: int | None = None
    patience: int | None = None    # stop a trial once dev has not improved for this many evaluations
    eval_examples: int | None = None  # dev examples scored at each evaluation during a trial (0: all)
    confirm_top: int = 0
    confirm_seeds: int = 3
    ensemble: int = 0              # > 1: OUT/best averages the top-k templates (PET)
    select: str = "dev"            # "cv": the top templates are judged by k-fold over train ∪ dev
    folds: int = 4
    artifacts: str | None = None   # the Optuna artifact store folder (shared storage when several machines join)
    progress: bool | None = None
    trust_remote_code: bool = False
    precision: str = "auto"
    storage_patience: float = 300.0  # seconds workers wait for a database server that went away before they stop

    def to_dict(self) -> dict:
        return {**asdict(self), "storage": redact(self.storage)}


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
    """Create the study (screen the words, queue its N trials) or join an existing one; re-running resumes.
    objective: a worker's Objective (its space, task and loaded backbone); its space learns the study's words."""
    space, causal = objective.space, objective.backbone.causal
    storage = open_storage(cfg.storage, cfg.storage_patience, wait=True)  # a worker may join mid-outage
    budget = effective_budget(cfg, space)
    sampler = make_sampler(cfg.seed)
    pruner = make_pruner(cfg.pruner, budget.steps, budget.eval_every)
    try:
        study = optuna.create_study(storage=storage, study_name=cfg.study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=cfg.study_name, sampler=sampler, pruner=pruner)
        created = False
    if created:
        study.set_user_attr("config", cfg.to_dict())
        study.set_user_attr("space", space.path)
        study.set_user_attr("budget", asdict(budget))
        if space.needs_screen():
            from .screen import screen
            kept, record = screen(space, objective.task, objective.backbone, cfg.data_dir)
            study.set_user_attr("screen", record)
            study.set_user_attr("words", [w.to_dict() for w in kept])
        space.words = words_of(study)
        references = space.references(causal)
        for name, params in references[:cfg.n_trials]:
            study.enqueue_trial(params, user_attrs={"reference": name})
        if len(references) > cfg.n_trials:
            dropped = [name for name, _ in references[cfg.n_trials:]]
            study.set_user_attr("dropped_references", dropped)
            say(f"--n-trials {cfg.n_trials} leaves no room for {len(dropped)} of the {len(references)} reference "
                f"trials ({', '.join(dropped)}) nor for any sampled trial")
        _fill_queue(study, cfg.n_trials)
        study.set_user_attr("n_trials", cfg.n_trials)
    else:
        study = _wait_for_queue(study)
        space.words = words_of(study)
        if cfg.n_trials > study.user_attrs.get("n_trials", 0):  # asked for more: top the queue up
            study.set_user_attr("n_trials", cfg.n_trials)
            _fill_queue(study, cfg.n_trials)
    return study


def words_of(study: optuna.Study) -> dict[str, Words]:
    """The screened words the study samples from, best first (none when there was nothing to screen)."""
    return {w["key"]: Words(**w) for w in study.user_attrs.get("words", [])}


def effective_budget(cfg: SearchConfig, space: SearchSpace) -> Budget:
    """The space's budget with the command line's overrides."""
    given = {key: getattr(cfg, key) for key in ("steps", "eval_every", "batch_size", "max_length", "patience",
                                                "eval_examples") if getattr(cfg, key) is not None}
    budget = dataclasses.replace(space.budget, **given)
    return dataclasses.replace(budget, eval_every=min(budget.eval_every, budget.steps))


def _budget_trials(study: optuna.Study) -> list:
    """Trials that count against the budget: all but failed ones (a failure is retried or reported)."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE,
                                                     TrialState.PRUNED))


def _fill_queue(study: optuna.Study, n_trials: int) -> None:
    for _ in range(n_trials - len(_budget_trials(study))):
        study.enqueue_trial({}, skip_if_exists=False)


def _wait_for_queue(study: optuna.Study, seconds: float = 900) -> optuna.Study:
    """A joining worker waits until the creating process has screened the words and written the budget."""
    deadline = time.time() + seconds
    while "n_trials" not in study.user_attrs:
        if time.time() > deadline:
            raise AutoplaceError(f"study {study.study_name!r} exists but its creator never finished setting it up")
        time.sleep(0.5)
        study = optuna.load_study(storage=study._storage, study_name=study.study_name, sampler=study.sampler,
                                  pruner=study.pruner)
    return study


def counts(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}


def device_for(worker: int, devices: list[str]) -> str | None:
    return devices[worker % len(devices)] if devices else None
