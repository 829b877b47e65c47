"""Shared by the benchmarks: where the data is, what machine this is, how results are written."""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AUTOPLACE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    from autoplace.artifact import versions
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "versions": versions()}
    info["commit"] = COMMIT
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str | None:
    """The code that produced a result; "+dirty" when code (not results) had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


COMMIT = git_commit()  # taken when the benchmark starts: edits made during a long run must not be credited


def device_tag() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{name}-{device_tag()}"
    payload = {"benchmark": name, "machine": machine(), **payload}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = (f"<!-- written by benchmarks/{Path(sys.argv[0]).name} -->\n\nMachine: {payload['machine']['platform']}, "
              f"{payload['machine']['cpu_count']} CPUs{', ' + payload['machine']['gpu'] if 'gpu' in payload['machine'] else ''}; "
              f"torch {payload['machine']['versions']['torch']}, transformers "
              f"{payload['machine']['versions']['transformers']}, optuna {payload['machine']['versions']['optuna']}; "
              f"{payload['machine']['date']}; commit {payload['machine']['commit']}.\n\n")
    stem.with_suffix(".md").write_text(header + markdown + "\n")
    return stem.with_suffix(".json"), stem.with_suffix(".md")


@dataclasses.dataclass
class SubsetSource:
    """A task's data source with some splits cut to a fixed, recorded list of example indices."""
    base: object
    keep: dict  # split -> list of indices

    def load(self, split: str, data_dir):
        ds = self.base.load(split, data_dir)
        return ds.select(self.keep[split]) if split in self.keep else ds


def subset_task(task, keep: dict):
    return dataclasses.replace(task, source=SubsetSource(task.source, keep), name=f"{task.name}")


def mean_std(values: list[float]) -> tuple[float, float]:
    import statistics
    return (statistics.mean(values), statistics.pstdev(values)) if values else (float("nan"), float("nan"))
