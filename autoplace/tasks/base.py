"""What a task is: data splits, the fields a template may use, how labels become words, and how it is scored."""
from __future__ import annotations

import copy
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import AutoplaceError
from ..inputs import field_text, json_lines, read_text
from .kinds import Choice, Classification, Cloze, kind_named, label_key

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")
DATA_DIR_ENV = "AUTOPLACE_DATA_DIR"  # where built-in tasks read their files when no --data-dir is given
METRICS = Classification.metrics  # what a task file may ask for; a cloze task reports p@1
SCORINGS = ("first_token", "full", "mean")


class DataSource(Protocol):
    def load(self, split: str, data_dir: str | None): ...


@dataclass
class Task:
    name: str
    kind: Classification | Cloze | Choice  # given by name ("classification", "cloze", "choice"); see kinds.py
    fields: list[str]
    template: str                  # the default manual template
    source: "DataSource" = field(repr=False)
    label_field: str = "label"
    verbalizer: dict[str, str] = field(default_factory=dict)  # label -> word (with its leading space)
    target_field: str = "target"   # cloze: a string or a list of acceptable strings
    metrics: tuple[str, ...] = ("acc",)  # of METRICS
    description: str = ""
    file: str | None = None  # the task YAML it came from (absolute), so an artifact can find it again
    coerce: bool = False     # field values that are not text (numbers, null...) become str(); else they are refused
    answer_scoring: str | None = None  # first_token | full (summed log-prob of every token) | mean; None: the kind's
    choices: list[str] = field(default_factory=list)  # choice: the fields holding each example's candidates
    group_field: str | None = None     # em: the field grouping answer options into questions (MultiRC)
    positive_label: str | None = None  # f1a: the label that marks a right answer option
    select_metric: str | None = None   # what dev selects and prunes by; None: the kind's (accuracy, or p@1)
    _splits: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # read once per task

    def __post_init__(self):
        if isinstance(self.kind, str):
            self.kind = kind_named(self.kind)
        self.answer_scoring = self.answer_scoring or self.kind.scorings[0]
        if self.answer_scoring not in self.kind.scorings:
            known = f"use one of {', '.join(SCORINGS)}" if self.answer_scoring not in SCORINGS else \
                f"a {self.kind.name} task takes {' or '.join(self.kind.scorings)}"
            raise AutoplaceError(f"task {self.name}: answer_scoring {self.answer_scoring!r}: {known}")

    def load_split(self, split: str, data_dir: str | None = None):
        """One split as an HF Dataset, checked. Splits load on demand: the test split only when it is scored."""
        if split not in SPLITS:
            raise AutoplaceError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
        key = split, data_dir or os.environ.get(DATA_DIR_ENV)  # what is read, not how it was named
        if key not in self._splits:
            self._splits[key] = check_examples(self, split, self.source.load(split, data_dir))
        return self._splits[key]

    def check_split(self, split: str, data_dir: str | None = None) -> None:
        """Read and check a split without keeping it: a search checks its test split before it starts (a missing
        file costs seconds, not a study), yet scores it only once, for the winner."""
        if split not in SPLITS:
            raise AutoplaceError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
        check_examples(self, split, self.source.load(split, data_dir))

    def with_words(self, verbalizer: dict[str, str]) -> "Task":
        """The same task (sharing its loaded splits) read through other label words, in the task's label order."""
        words = {label_key(k): v for k, v in verbalizer.items()}
        missing, extra = [l for l in self.labels if l not in words], [l for l in words if l not in self.verbalizer]
        if missing or extra:
            problem = f"lacks label {missing[0]!r}" if missing else f"names label {extra[0]!r}, which the task lacks"
            raise AutoplaceError(f"verbalizer {verbalizer} {problem} (task {self.name} has {', '.join(self.labels)})")
        twin = copy.copy(self)
        twin.verbalizer = {label: words[label] for label in self.labels}
        return twin

    @property
    def input_fields(self) -> list[str]:
        """What an example to predict on must carry: the template's fields and a choice task's candidates."""
        return list(dict.fromkeys([*self.fields, *self.choices]))

    @property
    def columns(self) -> list[str]:
        """Every column an example of a split carries: its input fields, its answer, and its group (MultiRC)."""
        return list(dict.fromkeys([*self.input_fields, self.kind.answer_column(self),
                                   *([self.group_field] if self.group_field else [])]))

    @property
    def labels(self) -> list[str]:
        return list(self.verbalizer)

    def label_of(self, example: dict) -> str:
        return label_key(example[self.label_field])

    def score(self, predicted: list[int], items) -> dict:
        """Metrics of the predicted label indices (or token ids, cloze) against the encoded items' answers."""
        return self.kind.score(self, predicted, items)

    @property
    def primary_metric(self) -> str:
        """What dev selects and prunes by."""
        return self.select_metric or self.kind.primary_metric

    @property
    def scores_whole_answers(self) -> bool:
        return self.answer_scoring != "first_token"


def load_file(split: str, path: Path):
    """Load a local jsonl/csv split file through HF datasets; errors name the file (and line for broken JSON)."""
    import datasets
    datasets.disable_progress_bars()
    path = Path(path)
    if not os.path.isfile(path):
        raise AutoplaceError(f"data file for split {split!r} not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise AutoplaceError(f"data file {path}: unsupported format {suffix!r} (use .jsonl or .csv)")
    if suffix == ".csv":
        read_text(path, "data file")
    elif not sum(1 for _ in json_lines(path, "data file")):  # checks every line; no example at all is an error
        raise AutoplaceError(f"data file {path}: is empty")
    try:
        ds = datasets.load_dataset("csv" if suffix == ".csv" else "json", data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parser errors in several types
        raise AutoplaceError(f"data file {path}: cannot be read ({str(exc).splitlines()[0]})") from None
    if len(ds) == 0:
        raise AutoplaceError(f"data file {path}: split {split!r} is empty")
    return ds


def text_of(task: Task, name: str, value, where: str) -> str:
    """A field's value as text; a choice task's empty or null candidate means the example has fewer candidates."""
    if value is None and name in task.choices:
        return ""
    return field_text(value, where, name, task.coerce)


def input_row(task: Task, row: dict, where: str) -> dict:
    """An example to predict on, as text (its fields present: the caller says which are missing, and where)."""
    texts = {name: text_of(task, name, row[name], where) for name in task.input_fields}
    if task.choices and not any(texts[name].strip() for name in task.choices):
        raise AutoplaceError(f"{where}: no candidate (fields {', '.join(task.choices)} are empty)")
    return texts


def check_examples(task: Task, split: str, ds):
    """Every field the task needs is present and text (or coerced to it), and every label is one the verbalizer
    knows. Returns the split, with values converted when the task says `coerce: true`."""
    for name in task.columns:
        if name not in ds.column_names:
            raise AutoplaceError(f"task {task.name}, split {split}: field {name!r} missing "
                                 f"(columns: {', '.join(ds.column_names)})")
    for name in task.input_fields:
        values = list(ds[name])
        texts = [text_of(task, name, v, f"task {task.name}, split {split}, example {i + 1}")
                 for i, v in enumerate(values)]
        if texts != values:
            ds = ds.remove_columns(name).add_column(name, texts)
    task.kind.check_answers(task, split, ds)
    if split == "train" and not isinstance(task.kind, Cloze):
        warn_one_answer(task, ds)
    return ds


def warn_one_answer(task: Task, ds) -> None:
    """A train split with one answer teaches a prompt to give it always, and a search judged on train (the screen,
    --select cv) then prefers such prompts; FewGLUE's WSC train (32 of 32 true) is one."""
    answers = {label_key(value) for value in ds[task.label_field]}
    if len(ds) > 1 and len(answers) == 1:
        log.warning(f"autoplace: task {task.name}: all {len(ds)} train examples have the answer {answers.pop()!r}; a "
                    f"prompt trained on them learns to give it always (give train both answers, or keep a zero-shot "
                    f"template)")


def units(groups: list | None, n_rows: int) -> list[list[int]]:
    """The rows that must stay together, in first-seen order: a question's options when grouped, else each row."""
    if groups is None:
        return [[row] for row in range(n_rows)]
    found: dict = {}
    for row, group in enumerate(groups):
        found.setdefault(group, []).append(row)
    return list(found.values())


def fixed_rows(n_rows: int, n: int, groups: list | None = None, seed: int = 0) -> list[int]:
    """At most n of n_rows rows, a fixed seeded choice, in order. Rows of one group (a MultiRC question) are kept
    or left out together, so exact match sees every option of a question it scores."""
    if n_rows <= n:
        return list(range(n_rows))
    if groups is None:
        return sorted(random.Random(seed).sample(range(n_rows), n))
    whole, rows = units(groups, n_rows), []
    for unit in random.Random(seed).sample(whole, len(whole)):
        if len(rows) + len(unit) <= n:
            rows += unit
    return sorted(rows or whole[0])
