"""Task kinds: what an answer is, how it is encoded, scored and shown. One small object per kind, so a new kind
(say, choosing among candidate texts) is one class here plus its test, not checks spread over the code.
"""
from __future__ import annotations

import numpy as np

from ..errors import AutoplaceError


class Classification:
    """A label per example, read as one of the verbalizer's words at the answer position."""
    name = "classification"
    primary_metric = "acc"
    metrics = ("acc", "f1_macro")
    needs_verbalizer = True

    def answer_column(self, task) -> str:
        return task.label_field

    def check_answers(self, task, split: str, ds) -> None:
        for i, value in enumerate(ds[task.label_field]):
            if label_key(value) not in task.verbalizer:
                raise AutoplaceError(f"task {task.name}, split {split}, example {i + 1}: unknown label {value!r} "
                                     f"(verbalizer has {', '.join(task.labels)})")

    def encode_answer(self, task, example: dict, first_token) -> tuple[int, list[int]]:
        """(label index, targets); -1 for unlabelled input (prediction)."""
        value = example.get(task.label_field)
        return (-1 if value is None else task.labels.index(label_key(value))), []

    def scored_rows(self, label_ids: list[int]) -> list[int] | None:
        """The LM-head rows that the scores cover: the label words' first tokens."""
        return label_ids

    def hits(self, task, predicted: list[int], items) -> list[bool]:
        return [p == it.label for p, it in zip(predicted, items)]

    def score(self, task, predicted: list[int], items) -> dict:
        pred, ref = np.asarray(predicted), np.asarray([it.label for it in items])
        out = {"acc": float((pred == ref).mean()) if len(ref) else 0.0}
        if "f1_macro" in task.metrics:
            out["f1_macro"] = macro_f1(pred, ref, len(task.labels))
        return out

    def describe(self, task, scores, tokenizer) -> dict:
        """One prediction: the label and each label's probability."""
        probs = scores.softmax(-1).tolist()
        return {"prediction": task.labels[int(scores.argmax())],
                "scores": {label: round(p, 6) for label, p in zip(task.labels, probs)}}


class Cloze:
    """Knowledge probing: the answer is any vocabulary token; an example may accept several targets (P@1)."""
    name = "cloze"
    primary_metric = "p@1"
    metrics = ("p@1",)
    needs_verbalizer = False

    def answer_column(self, task) -> str:
        return task.target_field

    def check_answers(self, task, split: str, ds) -> None:
        pass  # any text is a target

    def encode_answer(self, task, example: dict, first_token) -> tuple[int, list[int]]:
        value = example.get(task.target_field)
        if value is None:
            return -1, []
        answers = value if isinstance(value, list) else [value]
        targets = [first_token(" " + str(a).strip(), "cloze target") for a in answers]
        return targets[0], targets

    def scored_rows(self, label_ids: list[int]) -> list[int] | None:
        return None  # the whole vocabulary

    def hits(self, task, predicted: list[int], items) -> list[bool]:
        return [p in it.targets for p, it in zip(predicted, items)]

    def score(self, task, predicted: list[int], items) -> dict:
        hits = self.hits(task, predicted, items)
        return {"p@1": float(np.mean(hits)) if hits else 0.0}

    def describe(self, task, scores, tokenizer) -> dict:
        return {"prediction": tokenizer.decode([int(scores.argmax())]).strip()}


KINDS = {kind.name: kind for kind in (Classification(), Cloze())}


def kind_named(name) -> Classification | Cloze:
    if not isinstance(name, str) or name not in KINDS:
        raise AutoplaceError(f"unknown task kind {name!r} (use {', '.join(KINDS)})")
    return KINDS[name]


def label_key(value) -> str:
    """Labels as strings: JSON booleans become "true"/"false", numbers their text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def macro_f1(pred: np.ndarray, ref: np.ndarray, n_labels: int) -> float:
    scores = []
    for c in range(n_labels):
        tp = np.sum((pred == c) & (ref == c))
        fp = np.sum((pred == c) & (ref != c))
        fn = np.sum((pred != c) & (ref == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))
