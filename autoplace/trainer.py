"""The training loop: AdamW on prompt parameters only, dev evaluation every k steps reported to a callback."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .config import TrainConfig
from .featurize import Encoded, collate
from .errors import AutoplaceError
from .inference import autocast, evaluate, refresh_calibration
from .model import PromptedModel
from .tasks import Task
from .tasks.base import fixed_rows


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
    predictions: list = field(default_factory=list)  # the kept prompt's answers behind `dev`, one per item scored
    gold_answers: int = 0          # distinct right answers among those items
    seed: int = 0                  # the seed of the run kept (runner.fit may restart with another)
    restarts: int = 0              # how many times runner.fit trained it again

    @property
    def one_answer(self) -> bool:
        """The kept prompt gives one answer to every dev item though dev has several: a degenerate prompt."""
        return len(set(self.predictions)) == 1 and self.gold_answers > 1


class NonFiniteLoss(AutoplaceError):
    pass


def dev_steps(steps: int, eval_every: int) -> list[int]:
    """The steps at which dev is scored: every eval_every steps, and always the last one."""
    return sorted({*range(eval_every, steps + 1, eval_every), steps})


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
    for step in tqdm(range(1, steps + 1), desc="train", disable=None if progress is None else not progress,
                     leave=False):
        while len(order) < cfg.batch_size:
            order += torch.randperm(len(train_items), generator=order_rng).tolist()
        batch = collate([train_items[i] for i in order[:cfg.batch_size]], pad, device)
        del order[:cfg.batch_size]
        losses.append(train_step(model, batch, optimizer, cfg.max_grad_norm))
        if not math.isfinite(losses[-1]):
            raise NonFiniteLoss(f"loss is {losses[-1]} at step {step}")
        if step in scored_at:
            refresh_calibration(model)  # the prompt moved, and so did its content-free bias
            dev, predicted = evaluate(model, task, checkpoint_items, cfg.eval_batch_size)
            score = dev[task.primary_metric]
            history.append((step, score))
            stale = 0 if best is None or score > best[0] else stale + 1
            if stale == 0:
                best = (score, step, dev, copy.deepcopy(model.encoder.state_dict()), predicted)
            if callback is not None and not callback(step, score):
                stopped = True
                break
            if cfg.patience and stale >= cfg.patience and step < steps:
                out_of_patience = True
                break
    seconds = time.perf_counter() - start
    if best is None:  # nothing to train (no prompt slots): the template is scored as it is
        dev, predicted = evaluate(model, task, checkpoint_items, cfg.eval_batch_size)
        best = (dev[task.primary_metric], 0, dev, None, predicted)
        history.append((0, best[0]))
    elif best[3] is not None:
        model.encoder.load_state_dict(best[3])
        refresh_calibration(model)
    dev, predicted, scored = best[2], best[4], checkpoint_items
    if len(checkpoint_items) < len(dev_items) and not stopped:
        dev, predicted = evaluate(model, task, dev_items, cfg.eval_batch_size)  # a finished prompt: on all of dev
        scored = dev_items
    return TrainResult(dev, best[1], step if params else 0, seconds, history, losses, stopped, out_of_patience,
                       predicted, len({item.label for item in scored}), cfg.seed)


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
