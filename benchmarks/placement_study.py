"""The P-tuning paper's placement table, measured: frozen backbone, FewGLUE RTE / CB / BoolQ and MR sentiment.

Rows: zero-shot manual template; a PEFT-style prefix (prepended prompt, MLP encoder, random init as PEFT does);
the four fixed placements start / middle / end / mixed with the same total prompt length (the search space's
reference placements); and the template `autoplace search` finds (with --confirm-top). Every trained row gets the
same budget and the same seeds; dev selects the checkpoint, the test split is only reported. Every seed is kept.

    python benchmarks/placement_study.py --budget small --precision bf16  # a 2-core CPU (target < 90 min)
    python benchmarks/placement_study.py --budget full      # a GPU
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time

from common import DATA, mean_std, subset_task, write_results

from autoplace.backbones import PRECISIONS, load_backbone
from autoplace.plan import Budget, Plan, configs
from autoplace.runner import fit, prepare
from autoplace.search.run import search
from autoplace.search.space import default_space_path, load_space
from autoplace.search.storage import default_url
from autoplace.search.study import SearchConfig
from autoplace.tasks import get_task

BUDGETS = {
    # small cuts: 12 steps per run, inputs truncated to 96 tokens, test subsets (BoolQ 500, MR 500 of val/test),
    # MR train cut to 64 examples and its dev to 200 (of 994: scoring all of it at every dev step was 44 of the
    # first run's 96 minutes), a 10-trial search of 12-step trials confirmed over 2 seeds.
    "small": {"steps": 12, "eval_every": 6, "batch_size": 8, "max_length": 96, "search_trials": 10,
              "confirm_top": 2, "confirm_seeds": 2, "boolq_test": 500, "mr_test": 500, "mr_train": 64, "mr_dev": 200},
    "full": {"steps": 100, "eval_every": 10, "batch_size": 8, "max_length": 256, "search_trials": 40,
             "confirm_top": 3, "confirm_seeds": 3, "boolq_test": None, "mr_test": None, "mr_train": 32,
             "mr_dev": None},
}
FOLDERS = {"rte": "FewGLUE_32dev", "cb": "FewGLUE_32dev", "boolq": "FewGLUE_32dev", "mr": "MR_snippets"}


def fixed_subset(n_total: int, n: int | None, seed: int = 1234) -> list[int] | None:
    if n is None or n >= n_total:
        return None
    return sorted(random.Random(seed).sample(range(n_total), n))


def task_for(name: str, budget: dict):
    task = get_task(name)
    data_dir = str(DATA / FOLDERS[name])
    keep = {}
    if name == "boolq":
        keep["test"] = fixed_subset(len(task.load_split("test", data_dir)), budget["boolq_test"])
    if name == "mr":
        keep["test"] = fixed_subset(len(task.load_split("test", data_dir)), budget["mr_test"])
        keep["train"] = fixed_subset(len(task.load_split("train", data_dir)), budget["mr_train"])
        keep["dev"] = fixed_subset(len(task.load_split("dev", data_dir)), budget["mr_dev"])
    keep = {k: v for k, v in keep.items() if v is not None}
    return (subset_task(task, keep) if keep else task), data_dir, keep


def train_row(task, backbone, data_dir, plan: Plan, seed, budget) -> dict:
    prompt, cfg = configs(plan, Budget(**{k: budget[k] for k in ("steps", "eval_every", "batch_size", "max_length")}),
                          seed)
    run = prepare(task, backbone, prompt, data_dir)
    result = fit(run, cfg, progress=False)
    test = run.evaluate("test")
    return {"seed": seed, "dev": result.dev[task.primary_metric], "test": test[task.primary_metric],
            "test_metrics": test, "train_seconds": round(result.train_seconds, 2), "steps": result.steps_done}


def study_task(name: str, backbone, model: str, budget: dict, seeds: list[int]) -> dict:
    task, data_dir, keep = task_for(name, budget)
    space = load_space(default_space_path(name))
    refs = dict(space.references(backbone.causal))
    ref = space.reference
    rows = {}
    print(f"== {name}: zero-shot", flush=True)
    zero = train_row(task, backbone, data_dir, Plan(space.manual_template, "none", "vocab", ref.lr), seeds[0], budget)
    rows["zero-shot"] = {"template": space.manual_template, "runs": [zero]}  # no training: one run is all of it
    prefix = f"[P:{ref.total_length}] {space.manual_template}"
    plans = {"prefix (PEFT-style)": Plan(prefix, "mlp", "random", ref.lr)}
    for cls in ("start-only", "middle-only", "end-only", "mixed"):
        if cls in refs:
            plans[cls] = Plan(space.render({k.split(":", 1)[1]: v for k, v in refs[cls].items()
                                            if k.startswith("length:")}), ref.encoder, ref.init, ref.lr)
    print(f"== {name}: search", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(task=name, space=str(default_space_path(name)), out=tmp, storage=default_url(tmp),
                           study_name=f"bench-{name}", model=model, data_dir=data_dir, precision=backbone.precision,
                           n_trials=budget["search_trials"], seed=0, steps=budget["steps"],
                           eval_every=budget["eval_every"], batch_size=budget["batch_size"],
                           max_length=budget["max_length"],
                           confirm_top=budget["confirm_top"], confirm_seeds=budget["confirm_seeds"], progress=False)
        started = time.time()
        found = search(cfg, task)  # the search sees the same subsets
        search_seconds = time.time() - started
        best = json.loads(open(f"{tmp}/best/template.json").read())
    plans["autoplace search"] = Plan(found["template"], best["prompt"]["encoder"], best["prompt"]["init"],
                                     best["train"]["lr"])
    for row, plan in plans.items():
        print(f"== {name}: {row}: {plan.template}", flush=True)
        rows[row] = {"template": plan.template, "encoder": plan.encoder, "init": plan.init, "lr": plan.lr,
                     "runs": [train_row(task, backbone, data_dir, plan, s, budget) for s in seeds]}
    for row in rows.values():
        row["test_mean"], row["test_std"] = mean_std([r["test"] for r in row["runs"]])
        row["dev_mean"], row["dev_std"] = mean_std([r["dev"] for r in row["runs"]])
    return {"task": name, "metric": task.primary_metric, "subsets": {k: len(v) for k, v in keep.items()},
            "subset_indices": keep, "search": {"seconds": round(search_seconds, 1), "trials": found["trials"],
                                               "template": found["template"]}, "rows": rows}


def markdown(results: list[dict], budget_name: str, seeds: list[int]) -> str:
    names = [r["task"] for r in results]
    rows = list(results[0]["rows"])
    lines = [f"Budget `{budget_name}`, seeds {seeds}; test accuracy mean ± std over seeds (dev mean in brackets).", "",
             "| row | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in rows:
        cells = []
        for r in results:
            x = r["rows"].get(row)
            cells.append("–" if x is None else
                         f"{100 * x['test_mean']:.1f} ± {100 * x['test_std']:.1f} ({100 * x['dev_mean']:.1f})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Templates:", ""]
    for r in results:
        for row, x in r["rows"].items():
            lines.append(f"- {r['task']} / {row}: `{x['template']}`")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=list(BUDGETS), default="small")
    parser.add_argument("--tasks", default="rte,cb,boolq,mr")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the frozen forward's precision (the small CPU run uses bf16: 1.6x faster on CPUs "
                             "with bf16 instructions)")
    args = parser.parse_args()
    budget, seeds = BUDGETS[args.budget], [int(s) for s in args.seeds.split(",")]
    backbone = load_backbone(args.model, precision=args.precision)
    started = time.time()
    results = []
    for name in args.tasks.split(","):
        task_started = time.time()
        results.append(study_task(name, backbone, args.model, budget, seeds))
        results[-1]["seconds"] = round(time.time() - task_started, 1)
        print(f"== {name}: {results[-1]['seconds']:.0f} s", flush=True)
    table = markdown(results, args.budget, seeds)
    print(table)
    command = "python benchmarks/placement_study.py " + " ".join(sys.argv[1:])
    write_results(f"placement_study-{args.budget}",
                  {"budget": args.budget, "settings": budget, "seeds": seeds, "model": args.model,
                   "precision": backbone.precision, "command": command,
                   "wall_seconds": round(time.time() - started, 1), "tasks": results},
                  f"Produced by `{command}` (precision {backbone.precision}).\n\n" + table
                  + f"\n\nWall time: {time.time() - started:.0f} s "
                  + "(" + ", ".join(f"{r['task']} {r['seconds']:.0f} s" for r in results) + ").")


if __name__ == "__main__":
    main()
