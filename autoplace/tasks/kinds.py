"""Task kinds: what an answer is, how it is encoded, scored and shown. One small object per kind (classification,
cloze, choice among candidate texts), so a new kind is one class here plus its test, not checks spread over the code.
"""
from __future__ import annotations

import numpy as np

from ..errors import AutoplaceError


class Classification:
    """A label per example, read as one of the verbalizer's words at the answer position."""
    name = "classification"
    primary_metric = "acc"
    # f1a, em: MultiRC's, over answer options grouped by question; f1a_em: their mean, what SuperGLUE ranks MultiRC by
    # (F1a alone is maximised by answering "right" to every option)
    metrics = ("acc", "f1_macro", "f1a", "em", "f1a_em")
    needs_verbalizer = True
    needs_choices = False
    has_label_probs = True  # scores are a distribution over a fixed set (ensembles average them)
    scorings = ("first_token", "full", "mean")

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

    def candidate_texts(self, task, example: dict) -> list[str]:
        """What `full` scoring scores: every label word, whole."""
        return list(task.verbalizer.values())

    def scored_rows(self, label_ids: list[int]) -> list[int] | None:
        """The LM-head rows that first-token scores cover: the label words' first tokens."""
        return label_ids

    def hits(self, task, predicted: list[int], items) -> list[bool]:
        return [p == it.label for p, it in zip(predicted, items)]

    def score(self, task, predicted: list[int], items) -> dict:
        pred, ref = np.asarray(predicted), np.asarray([it.label for it in items])
        out = {"acc": float((pred == ref).mean()) if len(ref) else 0.0}
        if "f1_macro" in task.metrics:
            out["f1_macro"] = macro_f1(pred, ref, len(task.labels))
        if {"f1a", "em", "f1a_em"} & set(task.metrics):
            positive = task.labels.index(task.positive_label)
            out["f1a"] = binary_f1(pred == positive, ref == positive)
            out["em"] = exact_match(pred == ref, [it.group for it in items])
            out["f1a_em"] = (out["f1a"] + out["em"]) / 2
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
    needs_choices = False
    has_label_probs = False  # scores cover the whole vocabulary
    scorings = ("first_token",)

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


class Choice:
    """Each example carries its own candidate texts (fields named by the task's `choices`); the label is the index
    of the right one. Candidates are scored whole (summed or mean log-probability at the answer), never by a first
    token: two candidates often share it."""
    name = "choice"
    primary_metric = "acc"
    metrics = ("acc",)
    needs_verbalizer = False
    needs_choices = True  # the task names the fields that hold each example's candidates
    has_label_probs = True
    scorings = ("full", "mean")

    def answer_column(self, task) -> str:
        return task.label_field

    def check_answers(self, task, split: str, ds) -> None:
        for i, example in enumerate(ds):
            where = f"task {task.name}, split {split}, example {i + 1}"
            texts = [example[name] for name in task.choices]
            if not any(isinstance(t, str) and t.strip() for t in texts):
                raise AutoplaceError(f"{where}: no candidate (fields {', '.join(task.choices)} are empty)")
            value = example[task.label_field]
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(texts)):
                raise AutoplaceError(f"{where}: label {value!r} is not the index of one of its {len(texts)} "
                                     f"candidates (0 to {len(texts) - 1})")
            if not (isinstance(texts[value], str) and texts[value].strip()):
                raise AutoplaceError(f"{where}: label {value} names the candidate field {task.choices[value]!r}, "
                                     "which is empty")

    def encode_answer(self, task, example: dict, first_token) -> tuple[int, list[int]]:
        value = example.get(task.label_field)
        return (-1 if value is None else int(value)), []

    def candidate_texts(self, task, example: dict) -> list[str | None]:
        """One per candidate field, in order (the label indexes them); None where an example leaves one empty."""
        texts = [example.get(name) for name in task.choices]
        return [" " + t.strip() if isinstance(t, str) and t.strip() else None for t in texts]

    def scored_rows(self, label_ids: list[int]) -> list[int] | None:
        return None

    def hits(self, task, predicted: list[int], items) -> list[bool]:
        return [p == it.label for p, it in zip(predicted, items)]

    def score(self, task, predicted: list[int], items) -> dict:
        hits = self.hits(task, predicted, items)
        return {"acc": float(np.mean(hits)) if hits else 0.0}

    def describe(self, task, scores, tokenizer) -> dict:
        probs = scores.float().softmax(-1).tolist()  # a missing candidate (-inf) gets 0, so indices line up
        return {"prediction": int(scores.argmax()), "scores": [round(p, 6) for p in probs]}


KINDS = {kind.name: kind for kind in (Classification(), Cloze(), Choice())}


def kind_named(name) -> Classification | Cloze | Choice:
    if not isinstance(name, str) or name not in KINDS:
        raise AutoplaceError(f"unknown task kind {name!r} (use {', '.join(KINDS)})")
    return KINDS[name]


def label_key(value) -> str:
    """Labels as strings: JSON booleans become "true"/"false", numbers their text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def binary_f1(predicted: np.ndarray, reference: np.ndarray) -> float:
    """F1 of the positive class (MultiRC's F1a: over every answer option of every question)."""
    tp = int(np.sum(predicted & reference))
    denominator = int(np.sum(predicted)) + int(np.sum(reference))
    return 0.0 if tp == 0 else 2 * tp / denominator


def exact_match(correct: np.ndarray, groups: list) -> float:
    """The share of groups (MultiRC: questions) whose every answer option is right."""
    by_group: dict = {}
    for ok, group in zip(correct.tolist(), groups):
        by_group[group] = by_group.get(group, True) and ok
    return float(np.mean(list(by_group.values()))) if by_group else 0.0


def macro_f1(pred: np.ndarray, ref: np.ndarray, n_labels: int) -> float:
    scores = []
    for c in range(n_labels):
        tp = np.sum((pred == c) & (ref == c))
        fp = np.sum((pred == c) & (ref != c))
        fn = np.sum((pred != c) & (ref == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))
