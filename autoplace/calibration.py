"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use").

A template and its label words favour some labels whatever the input says. The label distribution the model gives
on content-free inputs ("N/A", "", "[MASK]" in every field), p_cf, measures that bias; calibrated scores divide the
label probabilities by it: log p(label | x) - log p_cf(label). The prompt changes the bias, so p_cf is recomputed
whenever the prompt has changed (each dev evaluation, and once training ends); an artifact stores the p_cf of its
final prompt and applies that one. Recomputing it is a prediction, so it lives with prediction (inference.py).
"""
from __future__ import annotations

import torch

CONTENT_FREE = ("N/A", "", "[MASK]")


def content_free_examples(task) -> list[dict]:
    return [{name: text for name in task.fields} for text in CONTENT_FREE]


def apply(scores: torch.Tensor, log_prior: torch.Tensor | None) -> torch.Tensor:
    """Calibrated log-scores: log-softmax over the labels minus log p_cf; scores as they are without a prior."""
    if log_prior is None:
        return scores
    return scores.float().log_softmax(-1) - log_prior.to(scores.device)
