"""Shared by the benchmarks: where the data is, what machine this is, how results are written.

Run as a script (`python benchmarks/common.py`), it copies every benchmarks/results/NAME.md into benchmarks/README.md
between that name's markers, as write_results does for the one it writes.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
import sys
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AUTOPLACE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"  # each results table sits there between its markers


def cpu_model() -> str:
    """The CPU's model name: bf16 kernels, and so scores in bf16, differ between CPUs (screen_precision.py)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict:
    from autoplace.artifact import versions
    from autoplace.backbones import cpu_has_bf16
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(), "cpu_bf16_units": cpu_has_bf16(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "versions": versions()}
    info["commit"] = COMMIT
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str | None:
    """The code that produced a result; "+dirty" when code had uncommitted changes (not results, nor markdown: an
    earlier task of a chained run rewrites benchmarks/README.md, which changes no code)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)*.md"], cwd=REPO,
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
              f"{payload['machine']['cpu_count']} CPUs ({payload['machine']['cpu']})"
              f"{', ' + payload['machine']['gpu'] if 'gpu' in payload['machine'] else ''}; "
              f"torch {payload['machine']['versions']['torch']}, transformers "
              f"{payload['machine']['versions']['transformers']}, optuna {payload['machine']['versions']['optuna']}; "
              f"{payload['machine']['date']}; commit {payload['machine']['commit']}.\n\n")
    stem.with_suffix(".md").write_text(header + markdown + "\n")
    publish(stem.with_suffix(".md"))
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def changed_settings(earlier: dict, settings: dict) -> dict[str, tuple]:
    """name -> (earlier value, this run's) for each setting that differs, nested ones named `outer.inner`; within a
    nested dict only the keys both have count, so a key added for new tasks is no change."""
    changed = {}
    for key, value in settings.items():
        before = earlier.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            changed.update({f"{key}.{k}": (before[k], value[k]) for k in before.keys() & value.keys()
                            if before[k] != value[k]})
        elif before != value:
            changed[key] = (before, value)
    return changed


def earlier_run(name: str, settings: dict, replace: bool = False) -> dict:
    """What an earlier run of a task-by-task benchmark left in results/NAME-DEVICE.json, to merge this run into. One
    made with other settings would be overwritten by this run's tasks alone, so it is refused before anything runs
    (SystemExit, one line), unless `replace`; then this run starts afresh."""
    path = RESULTS / f"{name}-{device_tag()}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    changed = changed_settings(earlier, settings) if earlier else {}
    if changed and not replace:
        said = ", ".join(f"{k} {a!r} here, {b!r} in this run" for k, (a, b) in sorted(changed.items()))
        raise SystemExit(f"{path.relative_to(REPO)} holds a run with other settings ({said}); this run would "
                         "overwrite it: pass --replace to do so, or run with its settings")
    return {} if changed else earlier


def merge_tasks(earlier: dict, results: list[dict], order: list[str]) -> list[dict]:
    """This run's tasks merged into an earlier run's (same settings): a task run again keeps the rows this run did not
    train; tasks in `order`, then others by name (a cut task such as mr@32 right after its own)."""
    tasks = {t["task"]: t for t in earlier.get("tasks", [])}
    for r in results:
        old = tasks.get(r["task"], {})
        tasks[r["task"]] = {**old, **r, "rows": {**old.get("rows", {}), **r["rows"]}}

    def place(spec):
        name = spec.partition("@")[0]
        return order.index(name) if name in order else len(order), spec
    return [tasks[spec] for spec in sorted(tasks, key=place)]


class MarkersMissing(ValueError):
    """benchmarks/README.md lacks one well-formed marker pair for a results name."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name} start -->", f"<!-- results:{name} end -->"


def replace_between_markers(text: str, name: str, markdown: str) -> str:
    """`text` with what lies between NAME's start and end markers replaced by `markdown`, and nothing else changed.
    Its headings move two levels down, below the README's own (`#` -> `###`). Exactly one start marker, then one
    end marker, or MarkersMissing says what is wrong."""
    start, end = markers(name)
    found = (text.count(start), text.count(end))
    if found != (1, 1) or text.index(start) > text.index(end):
        raise MarkersMissing(f"needs exactly one '{start}' followed by one '{end}' (found {found[0]} start and "
                             f"{found[1]} end marker(s)); add the pair where the {name} table belongs")
    body = re.sub(r"^(#{1,4}) ", r"##\1 ", markdown.strip("\n"), flags=re.M)
    head, rest = text.split(start)
    return head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def update_readme(name: str, markdown: str, readme: Path | None = None) -> bool:
    """Put `markdown` between NAME's markers in `readme` (default README); True if that changed the file. Raises
    MarkersMissing."""
    readme = readme or README
    text = readme.read_text(encoding="utf-8")
    try:
        new = replace_between_markers(text, name, markdown)
    except MarkersMissing as exc:
        raise MarkersMissing(f"{readme}: {exc}") from None
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def publish(md_path: Path) -> None:
    """A results file just written to benchmarks/results/ goes into benchmarks/README.md too (a results file written
    elsewhere, e.g. a test's temporary folder, does not). A name without markers there is said in one line, not an
    error: the results files are written and kept either way."""
    md_path = Path(md_path)
    if md_path.resolve().parent != RESULTS.resolve():
        return
    try:
        update_readme(md_path.stem, md_path.read_text(encoding="utf-8"))
    except (MarkersMissing, FileNotFoundError) as exc:
        print(f"note: {md_path.name} was not copied into the benchmarks README: {exc}", file=sys.stderr)


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


def refresh_readme(readme: Path | None = None) -> list[str]:
    """Every marker pair in `readme` (default README) whose results/NAME.md exists gets that file's text; returns the
    names filled."""
    readme = readme or README
    names = re.findall(r"<!-- results:(\S+) start -->", readme.read_text(encoding="utf-8"))
    filled = [n for n in names if (RESULTS / f"{n}.md").is_file()]
    for name in filled:
        update_readme(name, (RESULTS / f"{name}.md").read_text(encoding="utf-8"), readme)
    return filled


if __name__ == "__main__":
    done = refresh_readme()
    print(f"{README.relative_to(REPO)}: filled {', '.join(done) or 'nothing'}")
