"""Reading the files users hand in (data, predict inputs, task and space YAML, templates).

Whatever a file holds, reading it either succeeds or fails with one line naming the file, line or field: never a
traceback, and never a silent guess at what a value that is not text was meant to say.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import yaml

from .errors import AutoplaceError

MAX_LINE_CHARS = 1_000_000  # a JSON line longer than this is not an example


def read_text(path: str | Path, what: str) -> str:
    """The file's text; missing, unreadable, non-UTF-8 and binary files are refused."""
    try:
        data = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise AutoplaceError(f"{what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AutoplaceError(f"{what} {path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                             "save it as UTF-8") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise AutoplaceError(f"{what} {path} line {line}: holds a NUL byte, so it is binary, not text")
    return text


def read_yaml(path: str | Path, what: str):
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = (getattr(exc, "problem", None) or str(exc)).splitlines()[0]
        raise AutoplaceError(f"{what} {path}{where}: not valid YAML ({problem})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long to convert, nesting too deep
        raise AutoplaceError(f"{what} {path}: not valid YAML ({type(exc).__name__})") from None


def json_lines(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; every line must be one JSON object of sane size."""
    for n, line in enumerate(read_text(path, what).split("\n"), 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise AutoplaceError(f"{what} {path} line {n}: over 1 MB of text ({len(line):,} characters); "
                                 f"an example may hold at most {MAX_LINE_CHARS:,}")
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise AutoplaceError(f"{what} {path} line {n}: broken JSON ({exc})") from None
        if not isinstance(row, dict):
            raise AutoplaceError(f"{what} {path} line {n}: broken JSON (not a JSON object)")
        yield n, row


def field_text(value, where: str, name: str, coerce: bool) -> str:
    """A field's value as text: strings pass; other values are refused unless the task says `coerce: true`."""
    if isinstance(value, str):
        return value
    if coerce:
        return str(value)
    kind = ("null" if value is None else "a boolean" if isinstance(value, bool) else
            "a number" if isinstance(value, (int, float)) else "a list" if isinstance(value, list) else
            "an object" if isinstance(value, dict) else f"a {type(value).__name__}")
    raise AutoplaceError(f"{where}: field {name!r} is {kind}, not text (a task file with `coerce: true` converts "
                         "such values with str())")
