"""The training loop: AdamW on prompt parameters only, dev evaluation every k steps reported to a callback."""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import calibration
from .backbones import Backbone
from .featurize import Encoded, collate
from .errors import AutoplaceError
from .model import PromptedModel
from .tasks import Task
from .tasks.base import fixed_rows


@dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 10
    eval_batch_size: int = 32
    patience: int = 0  # stop once dev has not improved for this many evaluations (0: never)
    eval_examples: int = 0  # dev examples scored at each evaluation (a fixed choice; 0: all); see train()
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    dev: dict                      # the kept (best-dev) prompt's dev metrics: on all of dev, but a stopped run's on the
                                   # eval_examples subset its evaluations scored
    best_step: int
    steps_done: int
    train_seconds: float
    history: list = field(default_factory=list)  # (step, dev score) of each evaluation (on the eval_examples subset)
    losses: list = field(default_factory=list)   # training loss per step
    stopped_early: bool = False    # the callback (a pruner) stopped it
    out_of_patience: bool = False  # dev stopped improving: a finished run, trained for fewer steps


class NonFiniteLoss(AutoplaceError):
    pass


def dev_steps(steps: int, eval_every: int) -> list[int]:
    """The steps at which dev is scored: every eval_every steps, and always the last one."""
    return sorted({*range(eval_every, steps + 1, eval_every), steps})


def autocast(backbone: Backbone):
    """The frozen forward in the backbone's precision (bf16 autocast or full fp32)."""
    if backbone.precision == "bf16":
        return torch.autocast(backbone.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model: PromptedModel, task: Task, train_items: list[Encoded], dev_items: list[Encoded], cfg: TrainConfig,
          callback: Optional[Callable[[int, float], bool]] = None, progress: bool | None = None) -> TrainResult:
    """Train the prompt; keep the prompt of the best dev score (dev selects). callback(step, score) -> keep going?

    With cfg.eval_examples, the evaluations during training (which checkpoint is kept, what a pruner sees) score a
    fixed subset of dev, the same for every trial, and the kept prompt of a finished run is then scored once on all
    of dev: a large dev split (MR's 994) stops costing more than the training it judges."""
    device, pad = model.backbone.device, model.backbone.tokenizer.pad_token_id
    params = [p for p in model.encoder.parameters() if p.requires_grad and p.numel()]
    torch.manual_seed(cfg.seed)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if params else None
    steps = cfg.steps if params else 0
    scored_at = set(dev_steps(steps, cfg.eval_every))
    checkpoint_items = [dev_items[i] for i in fixed_rows(len(dev_items), cfg.eval_examples, _groups(dev_items))] \
        if cfg.eval_examples else dev_items
    best, history, losses, order, stopped, stale, out_of_patience = None, [], [], [], False, 0, False
    start = time.perf_counter()
    step = 0
    for step in tqdm(range(1, steps + 1), desc="train", disable=None if progress is None else not progress, leave=False):
        while len(order) < cfg.batch_size:
            order += torch.randperm(len(train_items), generator=order_rng).tolist()
        batch = collate([train_items[i] for i in order[:cfg.batch_size]], pad, device)
        del order[:cfg.batch_size]
        losses.append(train_step(model, batch, optimizer, cfg.max_grad_norm))
        if not math.isfinite(losses[-1]):
            raise NonFiniteLoss(f"loss is {losses[-1]} at step {step}")
        if step in scored_at:
            calibration.refresh(model)  # the prompt moved, and so did its content-free bias
            dev = evaluate(model, task, checkpoint_items, cfg.eval_batch_size)[0]
            score = dev[task.primary_metric]
            history.append((step, score))
            stale = 0 if best is None or score > best[0] else stale + 1
            if stale == 0:
                best = (score, step, dev, copy.deepcopy(model.encoder.state_dict()))
            if callback is not None and not callback(step, score):
                stopped = True
                break
            if cfg.patience and stale >= cfg.patience and step < steps:
                out_of_patience = True
                break
    seconds = time.perf_counter() - start
    if best is None:  # nothing to train (no prompt slots): the template is scored as it is
        dev = evaluate(model, task, checkpoint_items, cfg.eval_batch_size)[0]
        best = (dev[task.primary_metric], 0, dev, None)
        history.append((0, best[0]))
    elif best[3] is not None:
        model.encoder.load_state_dict(best[3])
        calibration.refresh(model)
    dev = best[2]
    if len(checkpoint_items) < len(dev_items) and not stopped:
        dev = evaluate(model, task, dev_items, cfg.eval_batch_size)[0]  # a finished prompt is judged on all of dev
    return TrainResult(dev, best[1], step if params else 0, seconds, history, losses, stopped, out_of_patience)


def _groups(items: list[Encoded]) -> list | None:
    return [item.group for item in items] if any(item.group is not None for item in items) else None


def train_step(model: PromptedModel, batch: dict, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> float:
    """One optimizer step on one batch; returns the loss. A non-finite loss leaves the prompt unchanged."""
    with autocast(model.backbone):
        scores = model(**batch)
    loss = F.cross_entropy(scores.float(), batch["label"])
    value = loss.item()
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    return value


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
    return calibration.apply(scores, model.log_prior) if calibrated and len(scores) else scores


def evaluate(model: PromptedModel, task: Task, items: list[Encoded], batch_size: int = 32) -> tuple[dict, list[int]]:
    """(metrics, predicted label index or token id per item)."""
    was_training = model.training
    model.eval()
    best = predict(model, items, batch_size).argmax(-1).tolist()
    model.train(was_training)
    return task.score(best, items), best
