"""Scoring a built prompt: the frozen forward in the backbone's precision, label scores for many examples (batched
by length), metrics, and the content-free prior that calibration divides by (recomputed whenever the prompt moved).
Training (trainer.py), the runner and ensembles call this; of calibration.py it needs only `apply`, which needs
nothing back."""
from __future__ import annotations

import contextlib

import torch

from .backbones import Backbone
from .calibration import apply as calibrate
from .featurize import Encoded, collate
from .model import PromptedModel
from .tasks import Task


def autocast(backbone: Backbone):
    """The frozen forward in the backbone's precision (bf16 autocast or full fp32)."""
    if backbone.precision == "bf16":
        return torch.autocast(backbone.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: PromptedModel, items: list[Encoded], batch_size: int = 32, calibrated: bool = True) -> torch.Tensor:
    """Scores for every item, in input order (calibrated when the model is); batches are formed by length to waste
    little padding."""
    device, pad = model.backbone.device, model.backbone.tokenizer.pad_token_id
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    out = [None] * len(items)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        with autocast(model.backbone):
            scores = model(**collate([items[i] for i in idx], pad, device)).float().cpu()
        for row, i in enumerate(idx):
            out[i] = scores[row]
    scores = torch.stack(out) if out else torch.empty(0)
    return calibrate(scores, model.log_prior) if calibrated and len(scores) else scores


def evaluate(model: PromptedModel, task: Task, items: list[Encoded], batch_size: int = 32) -> tuple[dict, list[int]]:
    """(metrics, predicted label index or token id per item)."""
    was_training = model.training
    model.eval()
    best = predict(model, items, batch_size).argmax(-1).tolist()
    model.train(was_training)
    return task.score(best, items), best


def refresh_calibration(model) -> None:
    """Recompute the model's p_cf with its prompt as it is now (a no-op for an uncalibrated model)."""
    if model.content_free is None:
        return
    raw = predict(model, model.content_free, calibrated=False)
    model.log_prior = raw.float().softmax(-1).mean(0).log().to(model.backbone.device)
