"""A worker: loads the backbone once, then claims and runs trials until the study's budget is spent; Ctrl-C or
SIGTERM puts its running trial back in the queue."""
from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from .. import artifact
from ..backbones import load_backbone
from ..errors import AutoplaceError
from ..config import SearchConfig, configs
from ..runner import export, fit, metadata, prepare
from ..tasks import get_task
from ..template import depth_class, parse, placement_class
from ..trainer import NonFiniteLoss, dev_steps
from .progress import TICKER, Progress
from .space import load_space, words_label
from .opening import ARTIFACT_ATTR, device_for, effective_budget, open_study
from .storage import Heartbeat, StorageGone, claim, reclaim_orphans, requeue, tell, wait_for_stale


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a worker; the message says what became of its trial."""

    def __init__(self, signal_name: str, message: str = ""):
        super().__init__(message or f"interrupted ({signal_name})")
        self.signal_name, self.told = signal_name, bool(message)

    @property
    def exit_status(self) -> int:
        return 128 + (signal.SIGTERM if self.signal_name == "SIGTERM" else signal.SIGINT)


@contextlib.contextmanager
def phase(what: str):
    """A Ctrl-C (or SIGTERM) in here says where the search stopped, and that the same command resumes it; an
    interrupted trial has already said what became of it."""
    try:
        with TICKER.doing(what):
            yield
    except Interrupted as exc:
        if exc.told:
            raise
        raise Interrupted(exc.signal_name, f"interrupted ({exc.signal_name}) while {what}; run the same command "
                                           "again to resume") from None
    except KeyboardInterrupt:
        raise Interrupted("SIGINT", f"interrupted (SIGINT) while {what}; run the same command again to "
                                    "resume") from None


def raise_on_sigterm() -> None:
    """A cluster scheduler stops jobs with SIGTERM: treat it like Ctrl-C, so the running trial is put back."""
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise Interrupted("SIGTERM")
        signal.signal(signal.SIGTERM, handler)


class Objective:
    """One trial: sample a placement, train the prompt on train, report dev scores to the pruner, keep the prompt."""

    def __init__(self, cfg: SearchConfig, device: str | None, task=None):
        self.cfg = cfg
        self.space = load_space(cfg.space)
        self.task = task or get_task(cfg.task)
        self.backbone = load_backbone(cfg.model, device, cfg.trust_remote_code, cfg.precision)
        self.budget = effective_budget(cfg, self.space)
        self.store_dir = Path(cfg.artifacts or Path(cfg.out) / "artifacts").resolve()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(self.store_dir))

    def __call__(self, trial: optuna.Trial) -> float:
        plan = self.space.sample(trial, self.backbone.causal)
        template = parse(plan.template)
        trial.set_user_attr("template", plan.template)
        trial.set_user_attr("placement", placement_class(template))
        trial.set_user_attr("depth", depth_class(template))
        trial.set_user_attr("n_prompt_tokens", template.n_prompt_tokens)
        trial.set_user_attr("words", words_label(plan.verbalizer or self.task.verbalizer, plan.calibrate))
        if plan.verbalizer:
            trial.set_user_attr("verbalizer", plan.verbalizer)
            trial.set_user_attr("calibrate", plan.calibrate)
        prompt, train_cfg = configs(plan, self.budget, self.cfg.seed)
        run = prepare(self.task, self.backbone, prompt, self.cfg.data_dir)
        is_reference = "reference" in trial.user_attrs

        def report(step: int, score: float) -> bool:
            trial.report(score, step)
            return keep_going(trial, step, train_cfg.steps, is_reference)

        result = fit(run, train_cfg, report, progress=False)
        if not result.losses:  # nothing to train: the score holds at every dev step, so pruners can compare with it
            for step in dev_steps(train_cfg.steps, train_cfg.eval_every):
                report(step, result.history[0][1])  # on the examples every trial's evaluations score
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("steps", result.steps_done)
        trial.set_user_attr("dev", result.dev)
        trial.set_user_attr("one_answer", result.one_answer)  # ranked below every trial that is not (trials.py)
        trial.set_user_attr("restarts", result.restarts)
        if result.stopped_early:
            trial.set_user_attr("reason", f"pruned at step {result.steps_done}")
            raise optuna.TrialPruned()
        if result.out_of_patience:
            trial.set_user_attr("reason", f"stopped at step {result.steps_done}: dev did not improve for "
                                          f"{train_cfg.patience} evaluations")
        meta = metadata(run, train_cfg, result, None,
                        {"study": self.cfg.study_name, "trial": trial.number})
        self._keep(trial, run, meta)
        return result.dev[self.task.primary_metric]

    def _keep(self, trial: optuna.Trial, run, meta: dict) -> None:
        """Store the trial's artifact in the study's artifact store, so export needs no retraining."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = export(Path(tmp) / "artifact", run, meta)
            ids = {name: upload_artifact(artifact_store=self.store, file_path=str(folder / name),
                                         study_or_trial=trial)
                   for name in (artifact.META_FILE, artifact.WEIGHTS_FILE)}
        trial.set_user_attr(ARTIFACT_ATTR, {"store": str(self.store_dir), "ids": ids})


def keep_going(trial: optuna.Trial, step: int, last_step: int, is_reference: bool) -> bool:
    """A reference trial always finishes, and so does a trial at its last step: pruning it then saves nothing
    and would throw away a fully trained prompt. The pruner is asked every time, because hyperband and successive
    halving record a trial's score for later comparisons only when asked."""
    prune = trial.should_prune()
    return is_reference or step >= last_step or not prune


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> tuple[str, str | None]:
    """Run one claimed trial and tell the study; a failing trial never ends the worker."""
    value, state, attrs = None, TrialState.FAIL, {}
    try:
        with Heartbeat(study, trial):
            value = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except optuna.exceptions.UpdateFinishedTrialError:  # another process declared it dead and queued a retry
        return "fail", f"trial {trial.number} was taken over by another worker"
    except StorageGone:  # nothing can be told to a storage that is gone; a re-run reclaims the trial
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the trial goes back to the queue before we exit
        signal_name = getattr(exc, "signal_name", "SIGINT")
        fate = ("was marked failed and queued again" if requeue(study, trial, f"interrupted by {signal_name}")
                else "had already finished")
        raise Interrupted(signal_name, f"interrupted ({signal_name}): trial {trial.number} {fate}; "
                                       "run the same command again to resume") from None
    except NonFiniteLoss as exc:
        attrs["reason"] = f"non-finite loss: {exc}"
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        attrs["reason"] = "CUDA out of memory"
    except AutoplaceError as exc:
        attrs["reason"] = str(exc)
    except Exception as exc:  # a bug or a broken backbone: keep the study alive, keep the evidence
        attrs = {"traceback": traceback.format_exc()[-4000:], "reason": f"{type(exc).__name__}: {exc}"}
    try:
        if state == TrialState.FAIL:
            attrs["failure"] = attrs["reason"].split(":")[0]  # the kind, to tell "every trial fails alike"
            for key, text in attrs.items():
                trial.set_user_attr(key, text)
        tell(study, trial, value if state == TrialState.COMPLETE else None,
             None if state == TrialState.COMPLETE else state)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker meanwhile (a stale heartbeat)
        return "fail", f"trial {trial.number} was taken over by another worker"
    return state.name.lower(), attrs.get("reason")


def work(cfg: SearchConfig, worker: int = 0, task=None, objective: Objective | None = None) -> dict:
    """Claim and run trials until none are left (or --timeout); returns what this worker did. objective: one
    already built in this process (with the backbone loaded), else one is built here."""
    if cfg.devices:
        device = device_for(worker, cfg.devices)
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
    else:
        device = None
    raise_on_sigterm()
    with phase("loading the backbone"):
        objective = objective or Objective(cfg, device, task)
    with phase("setting up or joining the study (the zero-shot screen, the reference trials)"):
        study = open_study(cfg, objective)
    start, done, failures = time.time(), {"complete": 0, "pruned": 0, "fail": 0}, []
    progress = Progress(study, worker, cfg.progress)
    try:
        with phase("between two trials"):
            while cfg.timeout is None or time.time() - start < cfg.timeout:
                reclaim_orphans(study)
                trial = claim(study)
                if trial is None:
                    if wait_for_stale(study):  # an earlier run's trial came back to the queue
                        continue
                    break
                began = time.time()
                with TICKER.doing(f"training trial {trial.number}"):
                    state, reason = run_trial(study, trial, objective)
                done[state] += 1
                progress.trial_done(study, trial, state, reason, time.time() - began)
                if reason:
                    failures.append(reason)
                    if _all_failed_alike(study, reason):
                        raise AutoplaceError(f"every trial so far failed the same way: {reason}")
    finally:
        progress.close()
    return {"worker": worker, **done, "failures": failures}


def _all_failed_alike(study: optuna.Study, reason: str, at_least: int = 3) -> bool:
    """Failures are systemic when at least 3 finished trials all failed the same way, counting every trial or only
    the sampled ones (the references can succeed while everything the sampler proposes fails)."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    sampled = [t for t in finished if "reference" not in t.user_attrs]
    kind = reason.split(":")[0]
    return any(len(group) >= at_least and all(t.state == optuna.trial.TrialState.FAIL and
                                              t.user_attrs.get("failure") == kind for t in group)
               for group in (finished, sampled))
