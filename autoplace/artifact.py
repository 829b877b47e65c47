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
from safetensors.torch import load_file, save as serialize

from . import outdir
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
def staged(out_dir: str | Path, folder_type: str = "artifact"):
    """Yield an empty temporary folder beside out_dir; once the body has filled it, it is marked as autoplace's and
    replaces out_dir. A failure anywhere leaves out_dir as it was and removes the temporary folder.

    out_dir must be new, empty or autoplace's own `kind` folder: a user's files are never replaced.
    """
    out_dir = Path(out_dir)
    outdir.check(out_dir, folder_type, overwrite=True)
    tmp = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        yield tmp
        outdir.mark(tmp, folder_type)
        _swap_in(tmp, out_dir)
    except OSError as exc:  # disk full, permissions, a name too long...
        raise AutoplaceError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, out_dir: Path) -> None:
    """Rename new to out_dir; an older out_dir is moved aside first, put back if the rename fails, then deleted."""
    if not out_dir.exists():
        new.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    out_dir.rename(old)
    try:
        new.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, but written by Python: a full disk then raises OSError, which staged() turns into
    one line (safetensors' own writer raises its own error type)."""
    path.write_bytes(serialize(tensors, metadata=metadata))


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
    return os.path.isfile(os.path.join(path, META_FILE))  # never raises, even on text too long to be a path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not os.path.isdir(path):
        raise AutoplaceError(f"artifact {path}: no such folder")
    if not os.path.isfile(path / META_FILE):
        raise AutoplaceError(f"artifact {path}: {META_FILE} is missing")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except ValueError as exc:
        raise AutoplaceError(f"artifact {path}: {META_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise AutoplaceError(f"artifact {path}: format version "
                             f"{meta.get('format_version') if isinstance(meta, dict) else None} "
                             f"is not {FORMAT_VERSION}")
    if meta.get("ensemble"):  # its members are artifacts of their own, checked when loaded (ensemble.py)
        missing = [key for key in ("members", "task", "model") if key not in meta]
        if missing or not isinstance(meta["members"], list):
            raise AutoplaceError(f"artifact {path}: {META_FILE} lacks {', '.join(missing) or 'a list of members'}")
        return meta
    if not os.path.isfile(path / WEIGHTS_FILE):
        raise AutoplaceError(f"artifact {path}: {WEIGHTS_FILE} is missing")
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
