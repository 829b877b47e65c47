"""Do deep and late prompts need more steps, or better words? The placement study's depth rows trained longer.

The placement study trains every row 40 steps of batch 8; there, on 7 of 8 tasks, no trained row beats both
zero-shot rows. This runs its "deep (every layer)" and "late (half depth)" rows (the same plans, seeds, subsets and
learning rates) with more steps, so the study's 40-step figures and these are the same rows but for the steps. With
`--phrasing screened` the same slots go into the phrasing and label words of the study's "best screened words" row
(chosen by the zero-shot screen on train and dev), so a trained prompt starts from the best words found, not the
built-in ones. A task `mr@32` is MR cut to FewGLUE's 32 train and 32 dev examples. Dev still keeps the best
checkpoint (scored every `--eval-every` steps); test is only reported. Results are written after each task and
merged by task and row into an earlier run with the same settings; a run with other settings is refused before it
starts (`--replace` starts the file afresh).

    python benchmarks/depth_steps.py --tasks mr,boolq,cb --steps 160 --precision bf16
    python benchmarks/depth_steps.py --tasks boolq,wic --rows late --phrasing screened --precision bf16
    python benchmarks/depth_steps.py --tasks mr@32 --precision bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from common import RESULTS, device_tag, earlier_run, mean_std, merge_tasks, write_results
from placement_study import BUDGETS, ROW_NAMES, TASKS, fixed_placements, task_for, train_row

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS
from autoplace.study.space import default_space_path, load_space

ROWS = tuple(ROW_NAMES.values())  # deep (every layer), late (half depth)
SCREENED = "best screened words, zero-shot"
ON_SCREENED = ", screened words"  # a row's name on the screened phrasing: "late (half depth), screened words"


def few_shot(spec: str, budget: dict) -> tuple[str, dict]:
    """`mr@32`: MR with its train and dev splits cut to 32 seeded examples each, FewGLUE's sizes, so that MR, where
    trained prompts win with 512 train examples, shows what the 32 of FewGLUE leave of that (its test subset is the
    study's, so its zero-shot rows stand)."""
    name, _, n = spec.partition("@")
    if not n:
        return name, budget
    if name != "mr" or not n.isdigit():
        raise SystemExit(f"--tasks: {spec!r}: only MR may be cut, as mr@N (N train and N dev examples)")
    return name, {**budget, "mr_train": int(n), "mr_dev": int(n)}


def study_rows(spec: str) -> dict:
    """The placement study's 40-step figures for the same rows and its two zero-shot rows, to read beside."""
    name = spec.partition("@")[0]
    path = RESULTS / f"placement_study-small-{device_tag()}.json"
    tasks = {t["task"]: t for t in json.loads(path.read_text())["tasks"]} if path.is_file() else {}
    return {row: x for row, x in tasks.get(name, {}).get("rows", {}).items()
            if row in (*ROWS, "zero-shot", SCREENED)}


def plans_for(name: str, backbone, phrasing: str) -> dict:
    """The depth rows' plans on the default phrasing, or on the placement study's screened phrasing and words."""
    space = load_space(default_space_path(name))
    if phrasing == "default":
        return {row: plan for row, plan in fixed_placements(space, backbone).items() if row in ROWS}
    screened = study_rows(name).get(SCREENED)
    if screened is None:
        raise SystemExit(f"{name}: the placement study has no '{SCREENED}' row to take the phrasing from; run "
                         f"benchmarks/placement_study.py --tasks {name} first")
    at = [i for i, s in enumerate(space.skeletons) if s.manual_template == screened["template"]]
    if not at:
        raise SystemExit(f"{name}: the screened phrasing {screened['template']!r} is no skeleton of "
                         f"{default_space_path(name)}")
    space = dataclasses.replace(space, skeletons=[space.skeletons[at[0]]])
    return {row + ON_SCREENED: dataclasses.replace(plan, verbalizer=screened.get("verbalizer"),
                                                   calibrate=screened.get("calibrate", False))
            for row, plan in fixed_placements(space, backbone).items() if row in ROWS}


def task_rows(spec: str, backbone, budget: dict, seeds: list[int], rows: list[str], phrasing: str,
              command: str) -> dict:
    name, budget = few_shot(spec, budget)
    task, data_dir, keep = task_for(name, budget)
    plans = plans_for(name, backbone, phrasing)
    out = {}
    for row, plan in plans.items():
        if not any(row.startswith(r) for r in rows):
            continue
        print(f"== {name} {row}: {plan.template!r} {plan.verbalizer or ''} calibrate={plan.calibrate}", flush=True)
        started, runs = time.time(), []
        for seed in seeds:
            runs.append(train_row(task, backbone, data_dir, plan, seed, budget))
            print(f"== {name} {row} seed {seed}: dev {runs[-1]['dev']:.3f} test {runs[-1]['test']:.3f} "
                  f"({runs[-1]['train_seconds']:.0f} s)", flush=True)
        out[row] = {"template": plan.template, "verbalizer": plan.verbalizer, "calibrate": plan.calibrate,
                    "encoder": plan.encoder, "lr": plan.lr, "runs": runs,
                    "seconds": round(time.time() - started, 1), "command": command}
        out[row]["test_mean"], out[row]["test_std"] = mean_std([r["test"] for r in runs])
        out[row]["dev_mean"], out[row]["dev_std"] = mean_std([r["dev"] for r in runs])
    return {"task": spec, "metric": task.primary_metric, "subsets": {k: len(v) for k, v in keep.items()},
            "rows": out}


def markdown(settings: dict, results: list[dict]) -> str:
    def cell(x):
        return f"{100 * x['test_mean']:.1f} ± {100 * x['test_std']:.1f} ({100 * x['dev_mean']:.1f})" if x else "–"
    steps = settings["settings"]["steps"]
    lines = [f"Test mean ± std over seeds {settings['seeds']} (dev mean in brackets); rows at {steps} steps of batch "
             f"{settings['settings']['batch_size']} (dev every {settings['settings']['eval_every']}) beside the "
             "placement study's 40-step rows and zero-shot rows (`placement_study-small-cpu.json`).", "",
             "| row | " + " | ".join(r["task"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    earlier = {r["task"]: study_rows(r["task"]) for r in results}
    for row in ("zero-shot", SCREENED):
        lines.append(f"| {row} | " + " | ".join(cell(earlier[r["task"]].get(row)) for r in results) + " |")
    for row in ROWS:
        lines.append(f"| {row}, 40 steps | " + " | ".join(cell(earlier[r["task"]].get(row)) for r in results) + " |")
        for name in (row, row + ON_SCREENED):
            if any(name in r["rows"] for r in results):
                lines.append(f"| {name}, {steps} steps | " + " | ".join(cell(r["rows"].get(name)) for r in results)
                             + " |")
    recipes = {row: x for r in results for row, x in r["rows"].items()}
    lines += ["", "Learning rates: " + "; ".join(f"{row} {recipes[row]['encoder']} at {recipes[row]['lr']:g}"
                                                 for row in ROWS if row in recipes) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mr,boolq,cb")
    parser.add_argument("--rows", default="deep,late", help="which depth rows: deep, late or both")
    parser.add_argument("--phrasing", choices=("default", "screened"), default="default",
                        help="the slots in the built-in phrasing, or in the placement study's screened words")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite an earlier results file made with other settings")
    args = parser.parse_args()
    rows = [ROW_NAMES.get(r.strip(), r.strip()) for r in args.rows.split(",")]
    if unknown := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROW_NAMES)}")
    budget = {**BUDGETS["small"], "steps": args.steps, "eval_every": args.eval_every}
    for spec in args.tasks.split(","):
        few_shot(spec, budget)  # a bad task name is refused before the backbone loads
    seeds = [int(s) for s in args.seeds.split(",")]
    backbone = load_backbone(args.model, precision=args.precision)
    settings = {"settings": budget, "seeds": seeds, "model": args.model, "precision": backbone.precision}
    earlier = earlier_run("depth_steps", settings, args.replace)
    command = "python benchmarks/depth_steps.py " + " ".join(sys.argv[1:])
    results = []
    for name in args.tasks.split(","):
        results.append(task_rows(name, backbone, budget, seeds, rows, args.phrasing, command))
        everything = merge_tasks(earlier, results, TASKS)
        table = markdown(settings, everything)
        print(table, flush=True)
        write_results("depth_steps", {**settings, "tasks": everything},
                      "Produced task by task by `benchmarks/depth_steps.py`.\n\n" + table)


if __name__ == "__main__":
    main()
