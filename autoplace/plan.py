"""What one prompt is to be and how much it may train: a Plan (the template and the settings chosen for it) and
a Budget. `configs` is the one place that turns them into the configs that build and train a prompt, so the
search's trials, its confirmation retrains, `autoplace train` and the benchmarks cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .pipeline import PromptConfig
from .trainer import TrainConfig


@dataclass(frozen=True)
class Budget:
    """Per trial: optimizer steps, dev evaluation every k steps (a pruning checkpoint), batch size, input tokens,
    patience: stop once dev has not improved for that many evaluations (0: off), and eval_examples: how many dev
    examples (a fixed choice) those evaluations score, the kept prompt being scored on all of dev (0: all)."""
    steps: int = 100
    eval_every: int = 10
    batch_size: int = 8
    max_length: int = 256
    patience: int = 0
    eval_examples: int = 0


@dataclass(frozen=True)
class Plan:
    """The choices that make one prompt: the template and how its prompt vectors start, are encoded and learn."""
    template: str
    encoder: str = "lstm"
    init: str = "vocab"
    lr: float = 3e-3
    init_words: tuple[str, ...] = field(default_factory=tuple)  # vocab init from these words
    verbalizer: dict | None = None  # label -> word; None: the task's own
    calibrate: bool = False         # contextual calibration of the label scores


def configs(plan: Plan, budget: Budget, seed: int) -> tuple[PromptConfig, TrainConfig]:
    prompt = PromptConfig(template=plan.template, encoder=plan.encoder, init=plan.init,
                          init_words=list(plan.init_words), seed=seed, max_length=budget.max_length,
                          verbalizer=plan.verbalizer, calibrate=plan.calibrate)
    train = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, lr=plan.lr,
                        eval_every=min(budget.eval_every, budget.steps), patience=budget.patience,
                        eval_examples=budget.eval_examples, seed=seed)
    return prompt, train
