"""Paired bootstrap intervals on a handful of examples: how the search says whether dev (or the screen's train ∪
dev) can tell two sets of answers apart, for the winner's ties, the verdict and where the references go."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..tasks.base import units


def bootstrap_scores(task, items, *predicted: list, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The task's metric on bootstrap resamples of dev, for each list of predictions on the same resamples (a paired
    bootstrap): shape (resamples, len(predicted)). MultiRC's questions are drawn whole, and a question drawn twice
    counts twice: each draw gets its own question id, so exact match is not merged across copies."""
    metric = task.primary_metric
    grouped = any(item.group is not None for item in items)
    together = units([item.group for item in items] if grouped else None, len(items))
    rng, out = np.random.default_rng(seed), np.zeros((resamples, len(predicted)))
    if not items:
        return out
    for r in range(resamples):
        rows = [(k, row) for k, u in enumerate(rng.integers(0, len(together), len(together))) for row in together[u]]
        sample = ([dataclasses.replace(items[row], group=(k, items[row].group)) for k, row in rows] if grouped
                  else [items[row] for _, row in rows])
        for j, answers in enumerate(predicted):
            out[r, j] = task.score([answers[row] for _, row in rows], sample)[metric]
    return out


def percentile_interval(values, level: float = 0.9) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def compare(task, items, ours: list, theirs: list, level: float = 0.9) -> tuple[float, float, str]:
    """The paired bootstrap interval of ours − theirs in the task's metric, and one word: `better` or `worse` where
    the interval excludes zero, else `tied`."""
    draws = bootstrap_scores(task, items, ours, theirs)
    lo, hi = percentile_interval(draws[:, 0] - draws[:, 1], level)
    return lo, hi, "better" if lo > 0 else "worse" if hi < 0 else "tied"
