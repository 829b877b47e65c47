"""Choosing a winner that dev noise did not choose.

A 32-example dev set has a standard error of about 8 points, and the best of 30 trials on it is biased upward (RTE:
a search picked a template at dev 78.1 that scored 51.6 on test). Two remedies, after Perez et al. 2021 ("True
Few-Shot Learning"):
- `--select cv`: the top templates are each trained k times on k-1 folds of train ∪ dev and scored on the fold held
  out; the best mean wins. Every example then judges, not only dev's 32.
- a bootstrap interval around the winner's dev score, and the trials whose score lies inside it named as tied.
The held-out test split is read by neither.
"""
from __future__ import annotations

import dataclasses
import random
import statistics

import numpy as np

from ..errors import AutoplaceError
from ..tasks.base import units


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


def bootstrap_interval(hits: list[bool], level: float = 0.9, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of an accuracy from its per-example hits."""
    if not hits:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    values = np.asarray(hits, dtype=float)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def tied_with(interval: tuple[float, float], trials, winner_number: int | None) -> list:
    """Completed trials whose dev score lies inside the winner's interval: dev cannot tell them apart."""
    lo, hi = interval
    return [t for t in trials if t.number != winner_number and t.value is not None and lo <= t.value <= hi]


def summary(scores: list[float]) -> dict:
    return {"fold_scores": scores, "mean": statistics.mean(scores), "std": statistics.pstdev(scores)}
