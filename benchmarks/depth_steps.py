"""Do deep and late prompts need more steps? The placement study's depth rows trained longer, scored on test.

The placement study trains every row 40 steps of batch 8; there, on 7 of 8 tasks, no trained row beats both
zero-shot rows. This runs its "deep (every layer)" and "late (half depth)" rows (the same plans, seeds, subsets and
learning rates) with more steps, so the study's 40-step figures and these are the same rows but for the steps. Dev
still keeps the best checkpoint (scored every `--eval-every` steps); test is only reported. Results are written after
each task, merged by task into an earlier run with the same settings.

    python benchmarks/depth_steps.py --tasks mr,boolq,cb --steps 160 --precision bf16
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from common import RESULTS, device_tag, mean_std, write_results
from placement_study import BUDGETS, fixed_placements, task_for, train_row

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS
from autoplace.study.space import default_space_path, load_space

ROWS = ("deep (every layer)", "late (half depth)")


def task_rows(name: str, backbone, budget: dict, seeds: list[int]) -> dict:
    task, data_dir, keep = task_for(name, budget)
    plans = fixed_placements(load_space(default_space_path(name)), backbone)
    rows = {}
    for row in ROWS:
        plan = plans[row]
        runs = []
        for seed in seeds:
            runs.append(train_row(task, backbone, data_dir, plan, seed, budget))
            print(f"== {name} {row} seed {seed}: dev {runs[-1]['dev']:.3f} test {runs[-1]['test']:.3f} "
                  f"({runs[-1]['train_seconds']:.0f} s)", flush=True)
        rows[row] = {"template": plan.template, "encoder": plan.encoder, "lr": plan.lr, "runs": runs}
        rows[row]["test_mean"], rows[row]["test_std"] = mean_std([r["test"] for r in runs])
        rows[row]["dev_mean"], rows[row]["dev_std"] = mean_std([r["dev"] for r in runs])
    return {"task": name, "metric": task.primary_metric, "subsets": {k: len(v) for k, v in keep.items()},
            "rows": rows}


def study_rows(name: str) -> dict:
    """The placement study's 40-step figures for the same rows and its two zero-shot rows, to read beside."""
    path = RESULTS / f"placement_study-small-{device_tag()}.json"
    tasks = {t["task"]: t for t in json.loads(path.read_text())["tasks"]} if path.is_file() else {}
    return {row: x for row, x in tasks.get(name, {}).get("rows", {}).items()
            if row in (*ROWS, "zero-shot", "best screened words, zero-shot")}


def merged(settings: dict, results: list[dict]) -> list[dict]:
    path = RESULTS / f"depth_steps-{device_tag()}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    if any(earlier.get(k) != v for k, v in settings.items()):
        return results
    ran = {r["task"] for r in results}
    return [r for r in earlier["tasks"] if r["task"] not in ran] + results


def markdown(settings: dict, results: list[dict]) -> str:
    def cell(x):
        return f"{100 * x['test_mean']:.1f} ± {100 * x['test_std']:.1f} ({100 * x['dev_mean']:.1f})" if x else "–"
    steps = settings["settings"]["steps"]
    lines = [f"Test mean ± std over seeds {settings['seeds']} (dev mean in brackets); rows at {steps} steps of batch "
             f"{settings['settings']['batch_size']} (dev every {settings['settings']['eval_every']}) beside the "
             "placement study's 40-step rows and zero-shot rows (`placement_study-small-cpu.json`).", "",
             "| row | " + " | ".join(r["task"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    earlier = {r["task"]: study_rows(r["task"]) for r in results}
    for row in ("zero-shot", "best screened words, zero-shot"):
        lines.append(f"| {row} | " + " | ".join(cell(earlier[r["task"]].get(row)) for r in results) + " |")
    for row in ROWS:
        lines.append(f"| {row}, 40 steps | " + " | ".join(cell(earlier[r["task"]].get(row)) for r in results) + " |")
        lines.append(f"| {row}, {steps} steps | " + " | ".join(cell(r["rows"].get(row)) for r in results) + " |")
    lines += ["", "Learning rates: " + "; ".join(f"{row} {results[0]['rows'][row]['encoder']} at "
                                                 f"{results[0]['rows'][row]['lr']:g}" for row in ROWS) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mr,boolq,cb")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    budget = {**BUDGETS["small"], "steps": args.steps, "eval_every": args.eval_every}
    seeds = [int(s) for s in args.seeds.split(",")]
    backbone = load_backbone(args.model, precision=args.precision)
    settings = {"settings": budget, "seeds": seeds, "model": args.model, "precision": backbone.precision}
    command = "python benchmarks/depth_steps.py " + " ".join(sys.argv[1:])
    results = []
    for name in args.tasks.split(","):
        started = time.time()
        results.append(task_rows(name, backbone, budget, seeds))
        results[-1].update(seconds=round(time.time() - started, 1), command=command)
        everything = merged(settings, results)
        table = markdown(settings, everything)
        print(table, flush=True)
        write_results("depth_steps", {**settings, "tasks": everything},
                      "Produced task by task by `benchmarks/depth_steps.py`.\n\n" + table)


if __name__ == "__main__":
    main()
