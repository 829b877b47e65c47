"""Exported templates: DIR/template.json (everything needed to rebuild) + DIR/prompt.safetensors (the weights).

Written to a temporary folder and renamed, so a crash never leaves half an artifact; the JSON carries a format
version and the SHA-256 of the weights, checked on load. No pickle anywhere.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import AutoplaceError

FORMAT_VERSION = 1
META_FILE = "template.json"
REQUIRED_META = ("template", "task", "model", "prompt", "weights_sha256")  # what loading an artifact reads
WEIGHTS_FILE = "prompt.safetensors"


def versions() -> dict:
    import optuna
    import transformers
    from . import __version__
    return {"autoplace": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "optuna": optuna.__version__, "python": platform.python_version()}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def staged(out_dir: str | Path):
    """Yield an empty temporary folder beside out_dir; on success it replaces out_dir in one rename."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():  # replace an older folder only once the new one is whole
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save(out_dir: str | Path, state: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write an artifact folder."""
    with staged(out_dir) as tmp:
        weights = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        meta = {"format_version": FORMAT_VERSION, **meta, "weights_sha256": sha256(tmp / WEIGHTS_FILE),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions()}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out_dir)


def install(files: dict[str, Path], out_dir: str | Path) -> Path:
    """Copy an artifact's files (e.g. downloaded from a study's artifact store) into place, checked and atomic."""
    with staged(out_dir) as tmp:
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
        load_weights(tmp, read_meta(tmp))  # refuse to publish a damaged artifact
    return Path(out_dir)


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise AutoplaceError(f"artifact {path}: no such folder")
    for name in (META_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise AutoplaceError(f"artifact {path}: {name} is missing")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except ValueError as exc:
        raise AutoplaceError(f"artifact {path}: {META_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise AutoplaceError(f"artifact {path}: format version {meta.get('format_version') if isinstance(meta, dict) else None} "
                             f"is not {FORMAT_VERSION}")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing or not isinstance(meta["prompt"], dict):
        raise AutoplaceError(f"artifact {path}: {META_FILE} lacks {', '.join(missing) or 'a valid prompt'}")
    return meta


def load_weights(path: str | Path, meta: dict) -> dict[str, torch.Tensor]:
    path = Path(path)
    if sha256(path / WEIGHTS_FILE) != meta.get("weights_sha256"):
        raise AutoplaceError(f"artifact {path}: {WEIGHTS_FILE} does not match the checksum in {META_FILE} "
                             "(truncated or modified)")
    try:
        return load_file(path / WEIGHTS_FILE)
    except Exception as exc:  # safetensors raises its own error type
        raise AutoplaceError(f"artifact {path}: {WEIGHTS_FILE} cannot be read ({exc})") from None


def check_backbone(path: str | Path, meta: dict, signature: dict) -> None:
    saved = meta.get("backbone", {})
    for key in ("hidden_size", "vocab_size", "causal"):
        if key in saved and saved[key] != signature[key]:
            raise AutoplaceError(f"artifact {path} was trained on {saved.get('model')} ({key} {saved[key]}); "
                                 f"backbone {signature['model']} has {key} {signature[key]}")
