"""One prompt, end to end: build, train on train, select on dev, package as an artifact; and load it back.

Shared by `autoplace train`, every search trial and `autoplace export`, so all three write the same artifact.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import artifact, ensemble
from .backbones import Backbone, load_backbone
from .calibration import CONTENT_FREE
from .featurize import Featurizer
from .errors import AutoplaceError
from .model import PromptedModel
from .config import PRECISION, PromptConfig, TrainConfig
from .inference import evaluate, predict, refresh_calibration
from .pipeline import build
from .tasks import Task, get_task
from .tasks.builtin import DATA_DIR_ENV
from .trainer import TrainResult, train


@dataclass
class PromptRun:
    """A built prompt on its backbone, with what it knows about its task."""
    task: Task
    backbone: Backbone
    prompt: PromptConfig
    featurizer: Featurizer
    model: PromptedModel
    data_dir: str | None = None
    init_state: dict | None = None  # the weights it started from (a continued prompt); None: its init

    def items(self, split: str):
        return self.featurizer.encode_all(self.task.load_split(split, self.data_dir))

    def evaluate(self, split: str, batch_size: int = 32) -> dict:
        return evaluate(self.model, self.task, self.items(split), batch_size)[0]

    def predictions(self, split: str) -> tuple[list[int], list]:
        """(predicted label or token per example, the encoded examples with their answers)."""
        items = self.items(split)
        return evaluate(self.model, self.task, items)[1], items

    def scores(self, examples) -> torch.Tensor:
        """Label (or token) scores of some examples, calibrated when the prompt is."""
        return predict(self.model, self.featurizer.encode_all(examples))


def prepare(task: Task, backbone: Backbone, prompt: PromptConfig, data_dir: str | None = None,
            init_state: dict | None = None) -> PromptRun:
    featurizer, model = build(task, backbone, prompt)
    if init_state is not None:
        try:
            model.encoder.load_state_dict(init_state)
        except RuntimeError:
            raise AutoplaceError("the starting prompt's weights do not fit this template/encoder "
                                 "(pass --fresh to start from scratch)") from None
    refresh_calibration(model)
    return PromptRun(featurizer.task, backbone, prompt, featurizer, model, data_dir,  # the task with its words
                     init_state)


RESTART_SEED = 1000  # restart k trains with seed + k * RESTART_SEED


def fit(run: PromptRun, cfg: TrainConfig, callback=None, progress: bool | None = None) -> TrainResult:
    """Train on train and select on dev; the test split is not touched here.

    A run that finishes with a prompt giving one answer to every dev example (the way a prompt that took too large
    a step falls over, on some seeds and not others) is trained again from a fresh seed, up to cfg.restarts times,
    and dev keeps the best; `run` then holds the kept prompt, and train_seconds counts every run (what it cost). A
    restart runs to the end without the callback: the pruner already let the first run finish, and its steps were
    reported."""
    result = train(run.model, run.task, run.items("train"), run.items("dev"), cfg, callback, progress)
    restarts, seconds = 0, result.train_seconds
    while result.one_answer and not result.stopped_early and restarts < cfg.restarts and run.model.encoder.n_tokens:
        restarts += 1
        seed = cfg.seed + restarts * RESTART_SEED
        again = prepare(run.task, run.backbone, dataclasses.replace(run.prompt, seed=seed), run.data_dir,
                        run.init_state)
        retried = train(again.model, again.task, again.items("train"), again.items("dev"),  # an init filler moves
                        dataclasses.replace(cfg, seed=seed), None, progress)
        seconds += retried.train_seconds
        if (not retried.one_answer, retried.dev[run.task.primary_metric]) > \
                (not result.one_answer, result.dev[run.task.primary_metric]):
            result = retried
            run.prompt, run.featurizer, run.model = again.prompt, again.featurizer, again.model
    return dataclasses.replace(result, restarts=restarts, train_seconds=seconds)


def metadata(run: PromptRun, cfg: TrainConfig, result: TrainResult, test: dict | None,
             extra: dict | None = None) -> dict:
    return {
        "template": run.prompt.template, "task": run.task.name, "task_file": run.task.file,
        "model": run.backbone.name, "backbone": run.backbone.signature(), "precision": run.backbone.precision,
        "verbalizer": run.task.verbalizer, "prompt": run.prompt.to_dict(),
        "train": {**cfg.to_dict(), "seed": result.seed}, "restarts": result.restarts,  # the seed of the run kept
        "data_dir": str(Path(run.data_dir).resolve()) if run.data_dir else None,  # where eval finds the splits
        "steps": result.steps_done, "best_step": result.best_step, "dev": result.dev, "test": test,
        "train_seconds": round(result.train_seconds, 3), **calibration_meta(run), **(extra or {}),
    }


def calibration_meta(run: PromptRun) -> dict:
    """The final prompt's p_cf, so eval and predict apply exactly the calibration that dev scored."""
    if run.model.log_prior is None:
        return {}
    return {"calibration": {"content_free": list(CONTENT_FREE), "labels": run.task.labels,
                            "p_cf": run.model.log_prior.exp().tolist()}}


def export(out_dir: str | Path, run: PromptRun, meta: dict) -> Path:
    return artifact.save(out_dir, run.model.encoder.state_dict(), meta)


def load(path: str | Path, data_dir: str | None = None, model: str | None = None, device: str | None = None,
         trust_remote_code: bool = False, precision: str = PRECISION) -> tuple[PromptRun, dict]:
    """Rebuild an exported prompt (or an ensemble of them) on its backbone; the weights are checked against the
    artifact's checksum before the slow backbone load."""
    meta = artifact.read_meta(path)
    folders = ensemble.member_dirs(path, meta) if ensemble.is_ensemble(meta) else [Path(path)]
    metas = [artifact.read_meta(f) for f in folders]
    weights = [artifact.load_weights(f, m) for f, m in zip(folders, metas)]
    task = get_task(meta.get("task_file") or meta["task"])
    backbone = load_backbone(model or meta["model"], device, trust_remote_code, precision)
    data_dir = (data_dir or os.environ.get(DATA_DIR_ENV) or meta.get("data_dir")
                or metas[0].get("data_dir"))  # given, else the one it was trained on
    runs = [rebuild(f, m, w, task, backbone, data_dir) for f, m, w in zip(folders, metas, weights)]
    return (ensemble.Ensemble(runs) if ensemble.is_ensemble(meta) else runs[0]), meta


def rebuild(path: str | Path, meta: dict, weights: dict, task: Task, backbone: Backbone,
            data_dir: str | None) -> PromptRun:
    """An exported prompt on a task and backbone already in hand: the search scores its winner on exactly the
    task, device and precision its trials ran on."""
    artifact.check_backbone(path, meta, backbone.signature())
    try:
        prompt = PromptConfig(**meta["prompt"])
    except TypeError as exc:
        raise AutoplaceError(f"artifact {path}: its prompt settings do not fit this version ({exc})") from None
    run = prepare(task, backbone, prompt, data_dir, weights)
    stored = meta.get("calibration")
    if prompt.calibrate and stored:
        run.model.log_prior = torch.tensor(stored["p_cf"], device=backbone.device).log()
    return run
