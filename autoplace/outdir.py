"""Where autoplace may write: a folder of its own, never one holding a user's files.

Every folder autoplace writes carries MARKER, naming its type. A folder is autoplace's when it has the marker and
holds nothing but what that type writes; anything else is the user's, and the folder is refused even with
--overwrite. Commands check their --out before any model loads, so a refusal costs nothing.
"""
from __future__ import annotations

import fnmatch
import json
import os
import stat
from pathlib import Path

from .errors import AutoplaceError

MARKER = ".autoplace.json"
ENTRIES = {  # what each type of folder holds besides the marker
    "artifact": ("template.json", "prompt.safetensors", "m[0-9]*"),  # m0, m1...: an ensemble's members
    "peft": ("adapter_config.json", "adapter_model.safetensors", "autoplace_prompt.json"),
    "report": ("report.md", "trials.csv", "*.png"),
    "search": ("study.db", "study.db-wal", "study.db-shm", "study.db-journal", "study.db.autoplace-lock", "artifacts",
               "best", "report.md", "space.yaml", "trials.csv", "*.png",
               ".best.*"),  # .best.*: a staged best/ that a killed search left behind; the lock: storage.study_lock
}
ACCEPTS = {"report": ("report", "search")}  # a report may go into its search's folder; other types only their own


def type_of(path: str | Path) -> str | None:
    """The folder type its marker names, or None (no marker, or not one autoplace wrote). Folders written before
    markers existed are recognised by their telltale files: an artifact's weights and metadata, a search's study.db."""
    try:
        folder_type = json.loads((Path(path) / MARKER).read_text(encoding="utf-8")).get("kind")
    except FileNotFoundError:
        names = set(os.listdir(path)) if os.path.isdir(path) else set()
        return ("artifact" if {"template.json", "prompt.safetensors"} <= names else
                "search" if "study.db" in names else None)
    except (OSError, ValueError, AttributeError):
        return None
    return folder_type if isinstance(folder_type, str) and folder_type in ENTRIES else None


def mark(path: str | Path, folder_type: str) -> None:
    (Path(path) / MARKER).write_text(json.dumps({"kind": folder_type}) + "\n")


def claim(path: str | Path, folder_type: str) -> None:
    """Create a checked folder that is written in place (search, report) and mark it, keeping an existing marker."""
    Path(path).mkdir(parents=True, exist_ok=True)
    if not (Path(path) / MARKER).is_file():  # a folder from before markers keeps the type its files show
        mark(path, type_of(path) or folder_type)


def check(path: str | Path, folder_type: str, overwrite: bool = False, flag: str = "--out") -> None:
    """Raise unless `path` may become a `folder_type` folder: new, empty, or autoplace's own with --overwrite.

    A search resumes in its own folder without --overwrite: re-running the same command continues the study.
    """
    there = _stat(path, flag)
    _refuse_precious(path, flag)
    if there is None:
        return
    if not stat.S_ISDIR(there.st_mode):
        raise AutoplaceError(f"{flag} {path} is a file, not a folder")
    entries = sorted(os.listdir(path))
    if not entries:
        return
    found = type_of(path)
    allowed = ENTRIES.get(found, ())
    foreign = [e for e in entries if not (found and e == MARKER)
               and not any(fnmatch.fnmatchcase(e, p) for p in allowed)]
    if foreign:
        raise AutoplaceError(f"{flag} {path} holds {foreign[0]}, which autoplace did not write; it is never replaced, "
                             "even with --overwrite: choose a new or empty folder")
    if found not in ACCEPTS.get(folder_type, (folder_type,)):
        raise AutoplaceError(f"{flag} {path} is an autoplace {found} folder, not a {folder_type} one: "
                             "choose another folder")
    if not overwrite and not (folder_type == found == "search"):
        raise AutoplaceError(f"{flag} {path} already holds an autoplace {found} folder; pass --overwrite to replace it")


def check_file(path: str | Path, overwrite: bool, flag: str = "--output") -> None:
    """An output file is replaced only with --overwrite."""
    there = _stat(path, flag)
    if there is not None and stat.S_ISDIR(there.st_mode):
        raise AutoplaceError(f"{flag} {path} is a folder, not a file")
    if there is not None and not overwrite:
        raise AutoplaceError(f"{flag} {path} exists; pass --overwrite to replace it")


def _stat(path: str | Path, flag: str) -> os.stat_result | None:
    """What is at path (None: nothing); a path the system cannot take (a NUL byte, a name too long) is refused."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AutoplaceError(f"{flag} {path!r} cannot be used: {getattr(exc, 'strerror', None) or exc}") from None


def _refuse_precious(path: str | Path, flag: str) -> None:
    """The current folder, home and their ancestors are never an output, whatever they hold."""
    target = Path(path).resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    what = ("your home folder" if target == home else "the current folder" if target == cwd
            else "a folder above the current or home folder" if target in (*cwd.parents, *home.parents) else None)
    if what:
        raise AutoplaceError(f"{flag} {path} is {what}; name a folder of its own")
