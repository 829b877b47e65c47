"""Optuna storages from a URL: any RDB URL (sqlite, postgresql, mysql) or `journal:///path/to/file.log`.

RDB storages get a heartbeat, so a worker killed mid-trial leaves a trial that the next worker marks failed and
retries (Optuna's RetryHeartbeatStaleTrialCallback); a journal storage has none. Passwords never reach a message.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import warnings

import optuna

from ..errors import AutoplaceError

HEARTBEAT_SECONDS = int(os.environ.get("AUTOPLACE_HEARTBEAT", "30"))
MAX_RETRY = 2
SCHEMA_RETRIES = 4


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and reports."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_url(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise AutoplaceError("storage journal: needs a file path, e.g. journal:///tmp/study.log")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if "://" not in url or scheme not in ("sqlite", "postgresql", "mysql"):
        raise AutoplaceError(f"storage {redact(url)!r}: not a storage URL (use sqlite:///file.db, "
                             "postgresql://user:pass@host/db, mysql://... or journal:///file.log)")
    if scheme == "sqlite":
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    for attempt in range(SCHEMA_RETRIES):
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=2 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
            if scheme == "sqlite":  # readers (reports, other workers) then never stall the writer
                with storage.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            return storage
        except ImportError as exc:
            raise AutoplaceError(f"storage {redact(url)!r}: database driver missing ({exc.name}); "
                                 "pip install 'psycopg[binary]' for PostgreSQL") from None
        except Exception as exc:  # sqlalchemy errors; two processes creating the schema at once collide
            if attempt + 1 < SCHEMA_RETRIES and _is_schema_race(exc):
                time.sleep(1 + attempt)
                continue
            first = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
            raise AutoplaceError(f"storage {redact(url)!r} cannot be opened: {first}") from None


def _is_schema_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "unique constraint", "database is locked"))
