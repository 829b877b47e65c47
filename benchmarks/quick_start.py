"""The README's quick-start search as a newcomer runs it: how long it is silent, and how many of its trials train.

Runs the `autoplace search` line of the README's quick start (taken from the README itself, so the two cannot
drift) in a fresh output folder, stamps every line it prints with the time since start, and reads the study it
leaves: trials trained (a prompt with at least one token) against zero-shot ones. The targets are #27's: a line at
least every 30 s from start to end, and at least half of the trials trained.

    python benchmarks/quick_start.py            # from the repository root or benchmarks/
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_results

MAX_SILENCE = 30.0  # seconds: the longest a newcomer should wait for the next line
README = REPO / "README.md"


def quick_start_command() -> list[str]:
    """The quick start's `autoplace search` line, as words."""
    block = README.read_text().split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    line = next(line for line in block.splitlines() if line.startswith("autoplace search"))
    return shlex.split(line.split("#", 1)[0])


def run(command: list[str], cwd: Path) -> tuple[list[tuple[float, str]], int, float]:
    """(every line with its time since start, exit code, wall seconds)."""
    autoplace = str(Path(sys.executable).with_name("autoplace"))
    started = time.monotonic()
    process = subprocess.Popen([autoplace, *command[1:]], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append((round(time.monotonic() - started, 1), line.rstrip("\n")))
        print(f"{lines[-1][0]:7.1f}s  {lines[-1][1]}", flush=True)
    return lines, process.wait(), round(time.monotonic() - started, 1)


def main() -> None:
    import optuna
    command = quick_start_command()
    with tempfile.TemporaryDirectory() as tmp:
        # the README's relative paths (../shared/data, runs/...) hold from the repository root
        command = [str(REPO.parent / "shared" / a[len("../shared/"):]) if a.startswith("../shared/") else a
                   for a in command]
        out = command[command.index("--out") + 1] = str(Path(tmp) / "nli")
        lines, code, seconds = run(command, REPO)
        url = f"sqlite:///{out}/study.db"
        study = optuna.load_study(storage=url, study_name=optuna.get_all_study_names(url)[0])
        trials = study.get_trials(deepcopy=False)
        trained = sum(t.user_attrs.get("n_prompt_tokens", 0) > 0 for t in trials)
    stamps = [0.0] + [t for t, _ in lines] + [seconds]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    longest = max(gaps)
    at = stamps[gaps.index(longest)]
    report = {"command": " ".join(quick_start_command()), "exit_code": code, "seconds": seconds, "lines": len(lines),
              "longest_silence_s": round(longest, 1), "longest_silence_after_s": at,
              "trials": len(trials), "trained_trials": trained, "targets": {"max_silence_s": MAX_SILENCE,
                                                                            "trained_share": 0.5},
              "met": {"silence": longest <= MAX_SILENCE, "trained": trained >= len(trials) / 2},
              "output": [f"{t:.1f}s {text}" for t, text in lines]}
    table = "\n".join([
        f"`{report['command']}` (the README's quick start), run by `benchmarks/quick_start.py` in a fresh folder; "
        f"exit code {code}.", "",
        "| measure | value | target |", "| --- | --- | --- |",
        f"| wall time | {seconds:.0f} s | |",
        f"| lines printed | {len(lines)} | |",
        f"| longest silence | {longest:.1f} s (after {at:.0f} s) | ≤ {MAX_SILENCE:.0f} s "
        f"{'✓' if report['met']['silence'] else '✗'} |",
        f"| trials trained | {trained} of {len(trials)} | ≥ half {'✓' if report['met']['trained'] else '✗'} |"])
    print(table)
    write_results("quick_start", report, "Produced by `benchmarks/quick_start.py`.\n\n" + table)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
