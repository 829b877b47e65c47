"""Where a search's time goes: one `autoplace search`, in process, timed phase by phase.

Phases (each the time spent in it, minus what nested phases took): backbone load; tokenization (Featurizer
encode_all); the zero-shot screen (its forwards, less its tokenization); train steps (forward, backward, AdamW);
dev scoring (dev evaluations and the calibration refresh that goes with them); test scoring (the winner, once);
artifact writing (each trial's prompt, the winner's export); report and plots; and the rest (Optuna, storage,
sampling, selection bookkeeping). Each is also split by where it happened: inside trials, in the selection of the
winner (confirm / cross-validation retrains), or around them.

The targets (issue 13): per-trial overhead, everything in a trial except its train steps and dev scoring, at most 5%
of trial time; dev scoring at most 15% of trial time at the space's eval_every.

    python benchmarks/search_cost.py --task rte --trials 12            # the default space's budget
    python benchmarks/search_cost.py --task mr --trials 12 --precision bf16
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
from collections import defaultdict

from common import COMMIT, DATA, RESULTS, device_tag, write_results
from placement_study import FOLDERS

import autoplace.runner as runner
import autoplace.study.report as report
import autoplace.study.run as run
import autoplace.study.screen as screen
import autoplace.study.worker as worker
import autoplace.trainer as trainer
from autoplace.featurize import Featurizer
from autoplace.study.space import default_space_path
from autoplace.study.storage import default_url
from autoplace.config import SearchConfig
from autoplace.tasks import get_task

CONTEXTS = ("trial", "selection")  # where a phase happened, when not around them


class Clock:
    """Exclusive time per (phase, context): a phase's time less that of the phases nested in it."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds = defaultdict(float)
        self.stack: list[list] = []  # [phase, start, nested seconds]
        self.trials: list[float] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        if self.stack and self.stack[-1][0] == "test scoring" and name == "dev scoring":
            yield  # the winner's test scoring calls the same evaluate: it stays test scoring
            return
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            where = self.context()  # a trial's own time counts as in the trial
            _, start, nested = self.stack.pop()
            elapsed = time.perf_counter() - start
            self.seconds[name, where] += elapsed - nested
            if self.stack:
                self.stack[-1][2] += elapsed
            if name == "trial":
                self.trials.append(elapsed)

    def context(self) -> str:
        return next((frame[0] for frame in reversed(self.stack) if frame[0] in CONTEXTS), "around")

    def wrap(self, owner, attribute: str, name, method: bool = False):
        """Replace owner.attribute by a timed version; name may be a function of the call's arguments."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.phase(name(*args, **kwargs) if callable(name) else name):
                return original(*args, **kwargs)
        setattr(owner, attribute, timed)


def instrument(clock: Clock) -> None:
    clock.wrap(worker, "load_backbone", "backbone load")
    clock.wrap(Featurizer, "encode_all", "tokenization")
    clock.wrap(screen, "screen", "screen")
    clock.wrap(trainer, "train_step", "train steps")
    clock.wrap(trainer, "evaluate", "dev scoring")
    clock.wrap(runner, "evaluate", "dev scoring")  # the winner's dev predictions (its bootstrap interval)
    clock.wrap(trainer, "refresh_calibration", "dev scoring")  # the content-free prior, after each evaluation
    clock.wrap(runner, "refresh_calibration", "dev scoring")
    clock.wrap(runner.PromptRun, "evaluate", lambda self, split, *a, **k: f"{'test' if split == 'test' else 'dev'}"
                                                                           " scoring")
    clock.wrap(runner.artifact, "save", "artifact writing")
    clock.wrap(report, "write_report", "report and plots")
    clock.wrap(worker.Objective, "__call__", "trial")
    clock.wrap(run, "choose_winner", "selection")
    clock.wrap(run, "manual_template", "selection")  # the verdict's baseline: the task's own template, zero-shot
    clock.wrap(run, "verdict", "selection")


def measure(args, clock: Clock) -> dict:
    clock.reset()
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as out:
        cfg = SearchConfig(task=args.task, space=str(default_space_path(args.task)), out=out, storage=default_url(out),
                           study_name=f"cost-{args.task}", model=args.model, data_dir=str(DATA / FOLDERS[args.task]),
                           precision=args.precision, n_trials=args.trials, steps=args.steps, max_length=args.max_length,
                           progress=False)
        started = time.perf_counter()
        summary = run.search(cfg, task)
        total = time.perf_counter() - started
    phases = defaultdict(float)
    for (name, _), seconds in clock.seconds.items():
        phases["rest" if name in ("trial", "selection") else name] += seconds
    phases["rest"] += total - sum(clock.seconds.values())  # outside every timed phase
    trial_time = sum(clock.trials)
    in_trials = {name: s for (name, where), s in clock.seconds.items() if where == "trial"}
    work = in_trials.get("train steps", 0.0) + in_trials.get("dev scoring", 0.0)
    return {"task": args.task, "total_seconds": round(total, 1), "phases": {k: round(v, 2) for k, v in phases.items()},
            "by_context": {f"{name} / {where}": round(s, 2) for (name, where), s in sorted(clock.seconds.items())},
            "trial_seconds": round(trial_time, 1), "trials_timed": len(clock.trials),
            "per_trial_overhead": round((trial_time - work) / trial_time, 4) if trial_time else None,
            "dev_scoring_share": round(in_trials.get("dev scoring", 0.0) / trial_time, 4) if trial_time else None,
            "summary": {k: summary[k] for k in ("template", "dev", "test", "trials", "search_seconds")}}


def markdown(results: list[dict], args) -> str:
    names = list(dict.fromkeys(p for r in results for p in r["phases"]))
    lines = [f"One search per task, {args.trials} trials, the space's budget"
             f"{f' with {args.steps} steps' if args.steps else ''}, precision {args.precision}; seconds (share).", "",
             "| phase | " + " | ".join(r["task"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{r['phases'].get(name, 0):.1f} ({100 * r['phases'].get(name, 0) / r['total_seconds']:.0f}%)"
            for r in results) + " |")
    lines.append("| total | " + " | ".join(f"{r['total_seconds']:.0f}" for r in results) + " |")
    lines += ["", "| target | " + " | ".join(r["task"] for r in results) + " |", "| --- |" + " --- |" * len(results),
              "| per-trial overhead ≤ 5% of trial time | " + " | ".join(
                  f"{100 * r['per_trial_overhead']:.1f}%" for r in results) + " |",
              "| dev scoring ≤ 15% of trial time | " + " | ".join(
                  f"{100 * r['dev_scoring_share']:.1f}%" for r in results) + " |"]
    return "\n".join(lines)


def merged(settings: dict, results: list[dict]) -> list[dict]:
    """This run's tasks, plus those of an earlier run with the same settings (one task per sitting)."""
    path = RESULTS / f"{settings['name']}-{device_tag()}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    def but_task(given: dict) -> dict:
        return {k: v for k, v in given.items() if k != "task"}
    if but_task(earlier.get("settings", {})) != but_task(settings):
        return results
    ran = {r["task"] for r in results}
    return [r for r in earlier.get("tasks", []) if r["task"] not in ran] + results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte", help="one task, or several comma-separated (rte,mr)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default: the space's budget")
    parser.add_argument("--max-length", type=int, default=None, help="default: the space's budget")
    parser.add_argument("--name", default="search_cost", help="results file stem")
    args = parser.parse_args()
    clock, results = Clock(), []
    instrument(clock)  # once: each task's search runs through the same timed functions
    command = "python benchmarks/search_cost.py " + " ".join(sys.argv[1:])
    for name in args.task.split(","):
        results.append(measure(argparse.Namespace(**{**vars(args), "task": name}), clock))
        results[-1].update(command=command, commit=COMMIT, date=time.strftime("%Y-%m-%d"))
        print(json.dumps(results[-1]), flush=True)
        record(args, results)  # after each task: a sitting cut short keeps what it measured


def record(args, results: list[dict]) -> None:
    everything = merged(vars(args), results)
    table = markdown(everything, args)
    print(table)
    write_results(args.name, {"settings": vars(args), "tasks": everything}, table + "\n\n" + "\n".join(
        f"- {r['task']}: `{r['command']}`, commit {r['commit']}, {r['date']}" for r in everything if "command" in r))


if __name__ == "__main__":
    main()
