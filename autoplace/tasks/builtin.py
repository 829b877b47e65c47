"""Built-in tasks: FewGLUE / SuperGLUE RTE, CB, BoolQ and MR sentiment, read from a folder or the hub."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import AutoplaceError
from .base import Task, load_file

DATA_DIR_ENV = "AUTOPLACE_DATA_DIR"


@dataclass
class FolderSource:
    """SuperGLUE-style folder (train.jsonl / dev32.jsonl / val.jsonl), or the hub when no folder is given."""
    folders: tuple[str, ...]           # sub-folder names to look for under --data-dir
    files: dict[str, tuple[str, ...]]  # split -> candidate file names
    hub: tuple[str, str | None]        # load_dataset(path, name) when there is no folder
    hub_columns: dict | None = None    # hub label ints -> our label strings

    def find_folder(self, data_dir: str) -> Path:
        root = Path(data_dir)
        candidates = [root / name for name in self.folders] + [root / "FewGLUE_32dev" / n for n in self.folders] + [root]
        for folder in candidates:
            if any(os.path.isfile(folder / f) for f in self.files["train"]):
                return folder
        raise AutoplaceError(f"--data-dir {data_dir}: no {' or '.join(self.folders)} folder with "
                             f"{self.files['train'][0]} found there")

    def load(self, split: str, data_dir: str | None):
        data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
        if data_dir:
            folder = self.find_folder(data_dir)
            for name in self.files[split]:
                if os.path.isfile(folder / name):
                    return load_file(split, folder / name)
            raise AutoplaceError(f"{folder}: no file for split {split!r} (expected {' or '.join(self.files[split])})")
        return self._from_hub(split)

    def _from_hub(self, split: str):
        """Hub data: train minus a seeded 10% dev, the official validation as the held-out test split."""
        import datasets
        try:
            if split == "test":
                ds = datasets.load_dataset(*self.hub, split="validation")
            else:
                parts = datasets.load_dataset(*self.hub, split="train").train_test_split(test_size=0.1, seed=0)
                ds = parts["train" if split == "train" else "test"]
        except Exception as exc:  # offline: ConnectionError, OSError, DatasetNotFoundError...
            raise AutoplaceError(f"no data: pass --data-dir (or set {DATA_DIR_ENV}) to a folder with the task's "
                                 f"files; the Hugging Face hub is unreachable ({type(exc).__name__})") from None
        if self.hub_columns:
            ds = ds.map(lambda ex: {k: f(ex) for k, f in self.hub_columns.items()})
        return ds


def _superglue(folder: str, config: str) -> FolderSource:
    return FolderSource((folder,), {"train": ("train.jsonl",), "dev": ("dev32.jsonl", "dev.jsonl"),
                                    "test": ("val.jsonl", "test.jsonl")}, ("super_glue", config),
                        {"label": _hub_label(config)})


def _hub_label(config: str):
    names = {"rte": ["entailment", "not_entailment"], "cb": ["entailment", "contradiction", "neutral"],
             "boolq": ["false", "true"]}[config]
    return lambda ex: names[ex["label"]]


def _fewglue(name: str, folder: str, fields: tuple[str, str], verbalizer: dict, description: str, **more) -> Task:
    """A FewGLUE pair task with the P-tuning paper's manual template, "{a} Question: {b}? Answer: [MASK]"."""
    return Task(name=name, kind="classification", fields=list(fields),
                template=f"{{{fields[0]}}} Question: {{{fields[1]}}}? Answer: [MASK]",
                source=_superglue(folder, name), verbalizer=verbalizer, description=description, **more)


BUILTIN = {
    "rte": _fewglue("rte", "RTE", ("premise", "hypothesis"), {"entailment": " Yes", "not_entailment": " No"},
                    "Recognizing textual entailment (FewGLUE RTE)"),
    "cb": _fewglue("cb", "CB", ("premise", "hypothesis"),
                   {"entailment": " Yes", "contradiction": " No", "neutral": " Maybe"},
                   "CommitmentBank, 3-way entailment (FewGLUE CB)", metrics=("acc", "f1_macro")),
    "boolq": _fewglue("boolq", "BoolQ", ("passage", "question"), {"false": " No", "true": " Yes"},
                      "Yes/no questions about a passage (FewGLUE BoolQ)"),
    "mr": Task(
        name="mr", kind="classification", fields=["sentence"],
        template="{sentence} It was [MASK]",
        source=FolderSource(("MR_snippets",), {"train": ("train.jsonl",), "dev": ("dev.jsonl",),
                                               "test": ("test.jsonl",)}, ("rotten_tomatoes", None),
                            {"label": lambda ex: ["negative", "positive"][ex["label"]], "sentence": lambda ex: ex["text"]}),
        verbalizer={"negative": " terrible", "positive": " great"},
        description="Movie-review sentence sentiment (MR snippets)"),
}
ALIASES = {"nli": "rte", "sentiment": "mr"}
