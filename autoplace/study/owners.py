"""Which process holds a trial: host, pid and process start time, so a reused pid is not mistaken for the owner
and a worker that died on this host is known dead at once (one on another host only by its heartbeat)."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (Linux; [] elsewhere): [0] the state, [19] the start
    time in clock ticks since boot."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str | None:
    """The process's start time, so a reused pid is not mistaken for ours."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def is_alive(owner: dict) -> bool | None:
    """True/False for a process on this host; None when it runs elsewhere (only its heartbeat can tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    if _proc_stat(int(owner["pid"]))[:1] in (["Z"], ["X"]):  # a zombie: dead, its parent has not yet waited for it
        return False
    now = _start_time(int(owner["pid"]))
    return owner.get("started") is None or now is None or now == owner["started"]
