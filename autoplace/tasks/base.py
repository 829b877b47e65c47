"""What a task is: data splits, the fields a template may use, how labels become words, and how it is scored."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import AutoplaceError

SPLITS = ("train", "dev", "test")
METRICS = ("acc", "f1_macro")  # a classification task's; a cloze task reports p@1
_SPLITS_LOADED: dict[tuple, object] = {}  # a process reads each split once


class DataSource(Protocol):
    def load(self, split: str, data_dir: str | None): ...


@dataclass
class Task:
    name: str
    kind: str                      # "classification" or "cloze"
    fields: list[str]
    template: str                  # the default manual template
    source: "DataSource" = field(repr=False)
    label_field: str = "label"
    verbalizer: dict[str, str] = field(default_factory=dict)  # label -> word (with its leading space)
    target_field: str = "target"   # cloze: a string or a list of acceptable strings
    metrics: tuple[str, ...] = ("acc",)  # of METRICS
    description: str = ""
    file: str | None = None  # the task YAML it came from (absolute), so an artifact can find it again

    def load_split(self, split: str, data_dir: str | None = None):
        """One split as an HF Dataset, checked. Splits load on demand: the test split only when it is scored."""
        if split not in SPLITS:
            raise AutoplaceError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
        key = (self.name, id(self.source), split, data_dir)
        if key not in _SPLITS_LOADED:
            ds = self.source.load(split, data_dir)
            check_examples(self, split, ds)
            _SPLITS_LOADED[key] = (self.source, ds)  # holding the source keeps its id from being reused
        return _SPLITS_LOADED[key][1]

    @property
    def labels(self) -> list[str]:
        return list(self.verbalizer)

    def label_of(self, example: dict) -> str:
        return label_key(example[self.label_field])

    def score(self, predictions, references) -> dict:
        """Metrics of label indices (classification) or hit booleans (cloze: references unused)."""
        if self.kind == "cloze":
            return {"p@1": float(np.mean(predictions)) if len(predictions) else 0.0}
        pred, ref = np.asarray(predictions), np.asarray(references)
        out = {"acc": float((pred == ref).mean()) if len(ref) else 0.0}
        if "f1_macro" in self.metrics:
            out["f1_macro"] = macro_f1(pred, ref, len(self.labels))
        return out

    @property
    def primary_metric(self) -> str:
        return "p@1" if self.kind == "cloze" else "acc"


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


def load_file(split: str, path: Path):
    """Load a local jsonl/csv split file through HF datasets; errors name the file (and line for broken JSON)."""
    import datasets
    datasets.disable_progress_bars()
    path = Path(path)
    if not path.is_file():
        raise AutoplaceError(f"data file for split {split!r} not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise AutoplaceError(f"data file {path}: unsupported format {suffix!r} (use .jsonl or .csv)")
    if suffix != ".csv":
        _check_json_lines(path)
    try:
        ds = datasets.load_dataset("csv" if suffix == ".csv" else "json", data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parser errors in several types
        raise AutoplaceError(f"data file {path}: cannot be read ({str(exc).splitlines()[0]})") from None
    if len(ds) == 0:
        raise AutoplaceError(f"data file {path}: split {split!r} is empty")
    return ds


def _check_json_lines(path: Path) -> None:
    with open(path, encoding="utf-8") as handle:
        n = 0
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise AutoplaceError(f"data file {path} line {n}: broken JSON ({exc})") from None
    if n == 0:
        raise AutoplaceError(f"data file {path}: is empty")


def check_examples(task: Task, split: str, ds) -> None:
    """Every field the task needs is present and every label is one the verbalizer knows."""
    needed = list(task.fields) + [task.target_field if task.kind == "cloze" else task.label_field]
    for name in needed:
        if name not in ds.column_names:
            raise AutoplaceError(f"task {task.name}, split {split}: field {name!r} missing "
                                 f"(columns: {', '.join(ds.column_names)})")
    if task.kind == "classification":
        for i, value in enumerate(ds[task.label_field]):
            if label_key(value) not in task.verbalizer:
                raise AutoplaceError(f"task {task.name}, split {split}, example {i + 1}: unknown label {value!r} "
                                     f"(verbalizer has {', '.join(task.labels)})")
