"""Task registry: built-in names and aliases, or a path to a task YAML."""
from __future__ import annotations

import os

from ..errors import AutoplaceError
from .base import SPLITS, Task, label_key
from .builtin import ALIASES, BUILTIN
from .custom import load_task_file

__all__ = ["SPLITS", "Task", "get_task", "label_key", "task_names"]


def task_names() -> list[str]:
    return list(BUILTIN) + list(ALIASES)


def get_task(name: str) -> Task:
    key = ALIASES.get(name, name)
    if key in BUILTIN:
        return BUILTIN[key]
    if name.endswith((".yaml", ".yml")) or os.path.isfile(name):  # isfile never raises, even on a too-long name
        return load_task_file(name)
    raise AutoplaceError(f"unknown task {name!r}: use one of {', '.join(task_names())} or a task .yaml file")
