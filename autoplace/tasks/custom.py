"""Custom tasks from a YAML file, so users bring their own data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import AutoplaceError
from ..inputs import read_yaml
from .base import METRICS, SCORINGS, SPLITS, Task, label_key, load_file
from .kinds import KINDS


@dataclass
class FileSource:
    files: dict[str, Path]

    def load(self, split: str, data_dir: str | None):
        if split not in self.files:
            raise AutoplaceError(f"this task has no {split!r} split in data_files")
        return load_file(split, self.files[split])


def load_task_file(path: str | Path) -> Task:
    path = Path(path)
    spec = read_yaml(path, "task file")

    def bad(key: str, problem: str) -> AutoplaceError:
        return AutoplaceError(f"task file {path}: key {key!r} {problem}")

    if not isinstance(spec, dict):
        raise AutoplaceError(f"task file {path}: expected a mapping of keys")
    known = {"name", "kind", "data_files", "fields", "label_field", "verbalizer", "template", "target_field",
             "description", "metrics", "coerce", "choices", "answer_scoring", "group_field", "positive_label",
             "select"}
    for key in spec:
        if key not in known:
            raise bad(key, f"is not a known key ({', '.join(sorted(known))})")
    kind = KINDS.get(spec.get("kind", "classification")) if isinstance(spec.get("kind", ""), str) else None
    if kind is None:
        raise bad("kind", f"must be {' or '.join(KINDS)}, not {spec['kind']!r}")
    needs = ("verbalizer",) if kind.needs_verbalizer else ("choices",) if kind.needs_choices else ()
    for key in ("name", "data_files", "fields", "template") + needs:
        if key not in spec:
            raise bad(key, "is required")
    files = spec["data_files"]
    if not isinstance(files, dict) or not files:
        raise bad("data_files", "must map splits (train, dev, test) to files")
    for split, name in files.items():
        if split not in SPLITS:
            raise bad(f"data_files.{split}", f"is not a split ({', '.join(SPLITS)})")
        if not isinstance(name, str) or not name:
            raise bad(f"data_files.{split}", "must be a file name")
    for split in ("train", "dev"):
        if split not in files:
            raise bad(f"data_files.{split}", "is required (train trains, dev selects)")
    fields = spec["fields"]
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise bad("fields", "must be a non-empty list of column names")
    verbalizer = spec.get("verbalizer") or {}
    if kind.needs_verbalizer:
        if not isinstance(verbalizer, dict) or len(verbalizer) < 2:
            raise bad("verbalizer", "must map at least two labels to words")
        verbalizer = {str(k).lower() if isinstance(k, bool) else str(k): str(v) for k, v in verbalizer.items()}
    if not isinstance(spec["template"], str):
        raise bad("template", "must be a string")
    if not isinstance(spec.get("coerce", False), bool):
        raise bad("coerce", "must be true or false")
    metrics = spec.get("metrics", ["acc"])
    if not isinstance(metrics, list) or not metrics or not all(m in METRICS for m in metrics):
        raise bad("metrics", f"must be a list of {', '.join(METRICS)}")
    choices = spec.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or (
            kind.needs_choices and len(choices) < 2):
        raise bad("choices", "must list the fields holding each example's candidate answers (two or more)")
    scoring = spec.get("answer_scoring")
    if scoring is not None and scoring not in SCORINGS:
        raise bad("answer_scoring", f"must be one of {', '.join(SCORINGS)}, not {scoring!r}")
    if "verbalizer" in spec and not kind.needs_verbalizer:
        raise bad("verbalizer", f"is not used by a {kind.name} task (its answers are "
                                f"{'the candidate fields in choices' if kind.needs_choices else 'any token'})")
    grouped = "em" in metrics or "f1a" in metrics
    if (grouped or "group_field" in spec) and not isinstance(spec.get("group_field"), str):
        raise bad("group_field", "must name the field that groups answer options into questions (f1a and em "
                                 "need it)")
    positive = spec.get("positive_label")
    positive = None if positive is None else label_key(positive)
    if (grouped or positive is not None) and positive not in verbalizer:
        raise bad("positive_label", f"must be the label of a right answer option, one of the verbalizer's "
                                    f"({', '.join(verbalizer)}); f1a and em need it")
    select = spec.get("select")
    if select is not None and (select not in metrics or select not in kind.metrics):
        raise bad("select", f"must be one of the task's metrics ({', '.join(metrics)}), not {select!r}")
    return Task(
        name=str(spec["name"]), kind=kind, fields=fields, template=spec["template"],
        source=FileSource({s: (path.parent / f) for s, f in files.items()}),
        label_field=spec.get("label_field", "label"), verbalizer=verbalizer,
        target_field=spec.get("target_field", "target"),
        metrics=tuple(metrics), description=spec.get("description", f"custom task from {path}"),
        file=str(path.resolve()), coerce=spec.get("coerce", False), answer_scoring=scoring, choices=choices,
        group_field=spec.get("group_field"), positive_label=positive, select_metric=select)
