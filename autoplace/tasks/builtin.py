"""Built-in tasks: the seven FewGLUE / SuperGLUE tasks and MR sentiment, read from a folder or the hub.

FewGLUE's WSC and MultiRC files are nested (a WSC target holds its spans; a MultiRC passage holds questions, a
question holds answer options); they are flattened into one example per answer option as they are read.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import AutoplaceError
from .base import DATA_DIR_ENV, Task, load_file


@dataclass
class FolderSource:
    """SuperGLUE-style folder (train.jsonl / dev32.jsonl / val.jsonl), or the hub when no folder is given."""
    folders: tuple[str, ...]           # sub-folder names to look for under --data-dir
    files: dict[str, tuple[str, ...]]  # split -> candidate file names
    hub: tuple[str, str | None]        # load_dataset(path, name) when there is no folder
    hub_columns: dict | None = None    # hub label ints -> our label strings
    flatten: Callable | None = None    # a nested file (FewGLUE WSC, MultiRC) -> one row per example
    hub_group: str | None = None       # hub rows sharing this column stay on one side of train/dev (a question)

    def find_folder(self, data_dir: str) -> Path:
        root = Path(data_dir)
        candidates = ([root / name for name in self.folders] + [root / "FewGLUE_32dev" / n for n in self.folders]
                      + [root])
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
                    ds = load_file(split, folder / name)
                    return self.flatten(ds, folder / name) if self.flatten else ds
            raise AutoplaceError(f"{folder}: no file for split {split!r} (expected {' or '.join(self.files[split])})")
        return self._from_hub(split)

    def _from_hub(self, split: str):
        """Hub data: train minus a seeded 10% dev (by whole question where rows are grouped), the official
        validation as the held-out test split."""
        import datasets
        try:
            ds = datasets.load_dataset(*self.hub, split="validation" if split == "test" else "train")
        except Exception as exc:  # offline: ConnectionError, OSError, DatasetNotFoundError...
            raise AutoplaceError(f"no data: pass --data-dir (or set {DATA_DIR_ENV}) to a folder with the task's "
                                 f"files; the Hugging Face hub is unreachable ({type(exc).__name__})") from None
        if self.hub_columns:
            ds = ds.map(lambda ex: {k: f(ex) for k, f in self.hub_columns.items()})
        if split == "test":
            return ds
        if not self.hub_group:
            return ds.train_test_split(test_size=0.1, seed=0)["train" if split == "train" else "test"]
        groups = list(dict.fromkeys(ds[self.hub_group]))
        held = set(random.Random(0).sample(groups, max(1, round(0.1 * len(groups)))))
        return ds.filter(lambda ex: (ex[self.hub_group] in held) == (split == "dev"))


def _superglue(folder: str, config: str, hub_columns: dict | None = None, flatten=None,
               hub_group: str | None = None) -> FolderSource:
    return FolderSource((folder,), {"train": ("train.jsonl",), "dev": ("dev32.jsonl", "dev.jsonl"),
                                    "test": ("val.jsonl", "test.jsonl")}, ("super_glue", config),
                        {"label": _hub_label(config), **(hub_columns or {})}, flatten, hub_group)


def _hub_label(config: str):
    if config == "copa":
        return lambda ex: ex["label"]  # the index of the right choice already
    names = {"rte": ["entailment", "not_entailment"], "cb": ["entailment", "contradiction", "neutral"]}.get(
        config, ["false", "true"])
    return lambda ex: names[ex["label"]]


def _marked(text: str, index: int, pronoun: str) -> str:
    """WSC's text with the pronoun at word `index` marked *thus* (as PET does), when the index points at it."""
    words = text.split(" ")
    if 0 <= index < len(words) and words[index].lower().startswith(pronoun.lower().split(" ")[0]):
        words[index] = f"*{words[index]}*"
    return " ".join(words)


def _flatten_wsc(ds, path: Path):
    def row(ex: dict) -> dict:
        target = ex["target"]
        return {"text": _marked(str(ex.get("text", "")), int(target["span2_index"]), str(target["span2_text"])),
                "noun": target["span1_text"], "pronoun": target["span2_text"], "label": ex.get("label")}
    return _rows(ds, path, lambda ex: [row(ex)], "a WSC line needs text and target.span1_text, span2_text and "
                                                 "span2_index")


def _flatten_multirc(ds, path: Path):
    """One example per answer option; `question_id` groups the options of a question (for exact match)."""
    def rows(ex: dict) -> list[dict]:
        passage = ex["passage"]
        if not passage["questions"]:
            raise ValueError("no questions")
        return [{"paragraph": passage["text"], "question": question["question"], "answer": answer["text"],
                 "question_id": f"{ex.get('idx')}-{question.get('idx', q)}",
                 "label": None if answer.get("label") is None else ("false", "true")[int(answer["label"])]}
                for q, question in enumerate(passage["questions"]) for answer in question["answers"]]
    return _rows(ds, path, rows, "a MultiRC line needs passage.text and passage.questions, each with its "
                                 "question and answers (each a text and a label 0 or 1)")


def _rows(ds, path: Path, flatten, needs: str):
    """Every line flattened into rows; a line that does not fit gets one line naming it."""
    import datasets
    rows = []
    for i, ex in enumerate(ds):
        try:
            rows += flatten(ex)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise AutoplaceError(f"{path}, line {i + 1}: {needs}") from None
    if not rows:
        raise AutoplaceError(f"{path}: no examples")
    return datasets.Dataset.from_list(rows)


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
                            {"label": lambda ex: ["negative", "positive"][ex["label"]],
                             "sentence": lambda ex: ex["text"]}),
        verbalizer={"negative": " terrible", "positive": " great"},
        description="Movie-review sentence sentiment (MR snippets)"),
}
BUILTIN.update({
    "copa": Task(
        name="copa", kind="choice", fields=["premise", "question", "choice1", "choice2"],
        template="{premise} What was the {question}? [MASK]", choices=["choice1", "choice2"],
        source=_superglue("COPA", "copa"), description="Choice of plausible alternatives, cause or effect "
        "(FewGLUE COPA); each answer is scored whole"),
    "wic": Task(
        name="wic", kind="classification", fields=["sentence1", "sentence2", "word"],
        template='{sentence1} {sentence2} Does "{word}" mean the same in both sentences? [MASK]',
        source=_superglue("WiC", "wic"), verbalizer={"false": " No", "true": " Yes"},
        description="Word in context: the same sense in two sentences? (FewGLUE WiC)"),
    "wsc": Task(
        name="wsc", kind="classification", fields=["text", "noun", "pronoun"],
        template='{text} In the sentence above, does "{pronoun}" refer to {noun}? [MASK]',
        source=_superglue("WSC", "wsc.fixed", {"noun": lambda ex: ex["span1_text"],
                                               "pronoun": lambda ex: ex["span2_text"],
                                               "text": lambda ex: _marked(ex["text"], ex["span2_index"],
                                                                          ex["span2_text"])}, _flatten_wsc),
        verbalizer={"false": " No", "true": " Yes"},
        description="Winograd schema: does the marked pronoun refer to the noun? (FewGLUE WSC)"),
    "multirc": Task(
        name="multirc", kind="classification", fields=["paragraph", "question", "answer"],
        template='{paragraph} Question: {question} Is it "{answer}"? [MASK]',
        source=_superglue("MultiRC", "multirc", {"question_id": lambda ex: f"{ex['idx']['paragraph']}-"
                                                                           f"{ex['idx']['question']}"},
                          _flatten_multirc, hub_group="question_id"),
        verbalizer={"false": " No", "true": " Yes"}, metrics=("f1a_em", "f1a", "em", "acc"),
        group_field="question_id", positive_label="true", select_metric="f1a_em",
        description="Multi-sentence reading comprehension: is each answer option right? (FewGLUE MultiRC; one "
                    "example per option, F1a over options and exact match per question; dev selects by their mean)"),
})
ALIASES = {"nli": "rte", "sentiment": "mr"}
