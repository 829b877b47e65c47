"""Ensembles of the top templates: several prompts on one backbone answer together, their calibrated label
probabilities averaged, as PET merges its patterns. With a 32-example dev set the best template is a noisy pick;
averaging the top few avoids betting on one.

An ensemble artifact is a folder whose template.json lists its members, each a complete artifact in a subfolder
(m0/, m1/, ...) with its own checksum, so a missing or altered member is refused like any damaged artifact.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import artifact
from .errors import AutoplaceError
from .inference import predict

MEMBER = "m{}"


class Ensemble:
    """Members (PromptRun objects) on one backbone and task; they differ in template, words and prompt."""

    def __init__(self, members: list, trials: list = ()):
        if not members:
            raise AutoplaceError("an ensemble needs at least one member")
        if not members[0].task.kind.has_label_probs:
            raise AutoplaceError(f"ensembles average label probabilities; task {members[0].task.name} has no labels")
        self.members, self.trials = members, list(trials)  # trials: the study's trials they came from, if any
        self.task, self.backbone = members[0].task, members[0].backbone

    def scores(self, examples) -> torch.Tensor:
        """Log of the members' mean calibrated label probabilities, one row per example."""
        probs = [predict(m.model, m.featurizer.encode_all(examples)).float().softmax(-1) for m in self.members]
        return torch.stack(probs).mean(0).log()

    def predictions(self, split: str) -> tuple[list[int], list]:
        examples = self.task.load_split(split, self.members[0].data_dir)
        items = self.members[0].featurizer.encode_all(examples)  # any member's: the answers are the same
        return self.scores(examples).argmax(-1).tolist(), items

    def evaluate(self, split: str) -> dict:
        return self.task.score(*self.predictions(split))


def is_ensemble(meta: dict) -> bool:
    return bool(meta.get("ensemble"))


def save(out_dir: str | Path, member_dirs: list[Path], meta: dict) -> Path:
    """Write an ensemble artifact atomically from member artifact folders (each checked on the way in)."""
    with artifact.staged(out_dir) as tmp:
        names = []
        for i, folder in enumerate(member_dirs):
            names.append(MEMBER.format(i))
            member_meta = artifact.read_meta(folder)
            artifact.load_weights(folder, member_meta)  # refuse to publish a damaged member
            (tmp / names[-1]).mkdir()
            for name in (artifact.META_FILE, artifact.WEIGHTS_FILE):
                (tmp / names[-1] / name).write_bytes((Path(folder) / name).read_bytes())
        meta = {"format_version": artifact.FORMAT_VERSION, **meta, "ensemble": True, "members": names,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": artifact.versions()}
        (tmp / artifact.META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out_dir)


def member_dirs(path: str | Path, meta: dict) -> list[Path]:
    """The member folders, each a readable artifact (its weights' checksum is checked where they are loaded)."""
    folders = []
    for name in meta.get("members") or []:
        folder = Path(path) / str(name)
        artifact.read_meta(folder)
        folders.append(folder)
    if not folders:
        raise AutoplaceError(f"artifact {path}: an ensemble with no members")
    return folders
