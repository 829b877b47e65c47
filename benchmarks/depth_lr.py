"""Which learning rate fits which depth: a sweep on train and dev (the test split is not read).

The same prompt (the reference's 6 tokens and init, on each task's default phrasing; the reference's LSTM encoder
unless a row names another) enters at the input, at every layer (`@all`), or at one layer at half depth (`@L/2`, at
the start of the text or just before the answer; below that layer its slots hold the pad token, or the tokens its
prompt starts from), and each is trained with a grid of learning rates at the placement study's `small` budget. Dev
(the checkpoint the trainer keeps) is what the grid is read by: the references' recipe per depth is the best mean
over tasks. Hidden-state norms per layer are recorded too, to compare with a step size scaled by the norm where a
prompt enters. With several seeds (`--seeds 0,1,2`) a rate is read by its mean over tasks and seeds, so a rate
that trains well on one seed and collapses on another is not chosen; runs of other seeds merge into the same file.

    python benchmarks/depth_lr.py --tasks mr,cb --precision bf16
    python benchmarks/depth_lr.py --tasks mr,cb --precision bf16 --seeds 1,2 --rows "late (before answer)"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import torch

from common import RESULTS, device_tag, write_results
from placement_study import BUDGETS, task_for

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS, Budget, Plan, Reference, configs
from autoplace.injection import layer_inputs
from autoplace.runner import fit, prepare
from autoplace.study.space import default_space_path, load_space

@dataclass(frozen=True)
class Row:
    """One prompt of the sweep: where it enters (input, all, late), where in the text, its filler and encoder."""
    depth: str
    rates: tuple[float, ...]
    before_answer: bool = False
    filler: str = "pad"
    encoder: str | None = None  # None: the reference's (LSTM)


GRID = {  # row name: the prompt and the learning rates tried
    "input": Row("input", (3e-3, 3e-2, 1e-1)),
    "all": Row("all", (3e-3, 1e-2, 3e-2)),
    "late (start)": Row("late", (3e-2, 1e-1, 3e-1)),
    "late (before answer)": Row("late", (1e-2, 3e-2, 1e-1, 3e-1), before_answer=True),
    # below the layer, the prompt's init tokens, not pads
    "late (before answer), filler init": Row("late", (3e-2, 1e-1, 3e-1), before_answer=True, filler="init"),
    # where text attends to the slot below its layer, so the filler can matter
    "late (start), filler init": Row("late", (1e-1,), filler="init"),
    # the probe trained plain vectors at every layer (no encoder); the encoder is a choice per depth
    "all, no encoder": Row("all", (3e-3, 1e-2, 3e-2), encoder="none"),
    "all, mlp": Row("all", (3e-3, 1e-2, 3e-2), encoder="mlp"),
    "late (before answer), no encoder": Row("late", (1e-2, 3e-2, 1e-1), before_answer=True, encoder="none"),
}


def template_for(row: Row, manual: str, n_layers: int, length: int) -> str:
    at = {"input": "", "all": "@all"}.get(row.depth, f"@{n_layers // 2}")
    slot = f"[P:{length}{at}]"
    if row.before_answer:
        return manual.replace("[MASK]", f"{slot} [MASK]")
    return f"{slot} {manual}"


def hidden_norms(backbone, text: str) -> list[float]:
    """Median hidden-state norm at each layer's input, over a sentence's tokens (the first, a sink, left out)."""
    ids = backbone.tokenizer(text, return_tensors="pt").input_ids.to(backbone.device)
    seen = layer_inputs(backbone.trunk, backbone.layers, list(range(backbone.n_layers)), input_ids=ids,
                        attention_mask=torch.ones_like(ids))
    return [round(float(seen[layer][0, 1:].float().norm(dim=-1).median()), 2) for layer in range(backbone.n_layers)]


def sweep_task(name: str, backbone, budget: dict, seeds: list[int], reference: Reference, only: list[str],
               rates: list[float] | None) -> dict:
    task, data_dir, _ = task_for(name, budget)
    manual = load_space(default_space_path(name)).manual_template
    fit_budget = Budget(**{k: budget[k] for k in ("steps", "eval_every", "batch_size", "max_length")})
    rows = {}
    for depth, row in GRID.items():
        if only and depth not in only:
            continue
        template = template_for(row, manual, backbone.n_layers, reference.total_length)
        for lr in (lr for lr in row.rates if rates is None or lr in rates):
            plan = Plan(template, row.encoder or reference.encoder, reference.init, lr, filler=row.filler)
            for seed in seeds:
                prompt, cfg = configs(plan, fit_budget, seed)
                run = prepare(task, backbone, prompt, data_dir)
                result = fit(run, cfg, progress=False)
                rows.setdefault(depth, {"template": template, "encoder": plan.encoder, "runs": []})["runs"].append(
                    {"lr": lr, "seed": seed, "dev": result.dev[task.primary_metric],
                     "train_seconds": round(result.train_seconds, 1), "restarts": result.restarts})
                print(f"== {name} {depth} lr {lr:g} seed {seed}: dev {result.dev[task.primary_metric]:.3f} "
                      f"({result.train_seconds:.0f} s)", flush=True)
    return {"task": name, "metric": task.primary_metric, "rows": rows}


def run_seed(run: dict, earlier_seed: int = 0) -> int:
    return run.get("seed", earlier_seed)  # runs written before --seeds carry the file's one seed


def merged(results: list[dict], args, precision: str) -> list[dict]:
    """This run's runs added to an earlier run's (same budget, model and precision), task by task and row by row; a
    run of the same row, rate and seed replaces the earlier one."""
    path = RESULTS / f"depth_lr-{device_tag()}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    same = {k: earlier.get(k) for k in ("budget", "model", "precision")} == \
        {"budget": args.budget, "model": args.model, "precision": precision}
    if not same:
        raise SystemExit(f"depth_lr.py: --rows needs an earlier run with the same settings in {path}")
    seed0 = earlier.get("seed", 0)
    by_task = {t["task"]: t for t in earlier["tasks"]}
    for result in results:
        rows = by_task.setdefault(result["task"], {**result, "rows": {}})["rows"]
        for depth, row in result["rows"].items():
            new = {(r["lr"], r["seed"]) for r in row["runs"]}
            kept = [{**r, "seed": run_seed(r, seed0)} for r in rows.get(depth, {}).get("runs", [])
                    if (r["lr"], run_seed(r, seed0)) not in new]
            rows[depth] = {**row, "runs": kept + row["runs"]}
    return list(by_task.values())


def dev_of(task: dict, depth: str, lr: float) -> list[float]:
    """The dev scores of one row and rate on one task, one per seed run (none where it was not run)."""
    return [r["dev"] for r in task["rows"].get(depth, {}).get("runs", []) if r["lr"] == lr]


def best_rates(results: list[dict]) -> dict:
    """Per depth: the learning rate with the best dev mean over the tasks and seeds swept (each task weighs the
    same); rates not run on every task are left out."""
    best = {}
    for depth, row in GRID.items():
        means = {lr: sum(sum(d) / len(d) for d in devs) / len(devs) for lr in row.rates
                 if all(devs := [dev_of(t, depth, lr) for t in results])}
        if means:
            best[depth] = {"lr": max(means, key=means.get),
                           "dev_means": {f"{lr:g}": round(m, 4) for lr, m in means.items()}}
    return best


def markdown(report: dict) -> str:
    tasks = [t["task"] for t in report["tasks"]]
    metrics = ", ".join(f"{t['task']} {t['metric']}" for t in report["tasks"])
    lines = [f"Budget `{report['budget']}` ({report['settings']['steps']} steps of batch "
             f"{report['settings']['batch_size']}), precision {report['precision']}; dev score of the kept checkpoint "
             f"({metrics}), the mean over the seeds run (how many: `seeds`; with several, the worst seed in "
             "brackets). The test split is not read.", "",
             "| depth | lr | seeds | " + " | ".join(tasks) + " | mean |",
             "| --- | --- | --- |" + " --- |" * (len(tasks) + 1)]
    for depth, row in GRID.items():
        for lr in row.rates:
            devs = [dev_of(t, depth, lr) for t in report["tasks"]]
            if not all(devs):
                continue
            mark = " **best**" if report["best"].get(depth, {}).get("lr") == lr else ""
            cells = [f"{100 * sum(d) / len(d):.1f}" + (f" ({100 * min(d):.1f})" if len(d) > 1 else "") for d in devs]
            seeds = "/".join(sorted({str(len(d)) for d in devs}))
            lines.append(f"| {depth} | {lr:g}{mark} | {seeds} | " + " | ".join(cells)
                         + f" | {100 * sum(sum(d) / len(d) for d in devs) / len(devs):.1f} |")
    norms = report["hidden_norms"]
    lines += ["", "Median hidden-state norm at a layer's input (SmolLM2 tokens of an MR sentence): "
              + ", ".join(f"layer {i} {n:g}" for i, n in enumerate(norms) if i % 5 == 0 or i == len(norms) // 2) + ".",
              "", "Templates: " + "; ".join(f"{d}: `{r['template']}`" for d, r in report["tasks"][0]["rows"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mr,cb")
    parser.add_argument("--budget", choices=list(BUDGETS), default="small")
    parser.add_argument("--seeds", default="0", help="training seeds, separated by commas")
    parser.add_argument("--rates", default="", help="only these learning rates of the rows run (separated by ,)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--rows", default="", help="only these rows (separated by ;), merged into the results "
                                                   "file of an earlier run with the same settings")
    args = parser.parse_args()
    only = [r.strip() for r in args.rows.split(";") if r.strip()]
    budget = BUDGETS[args.budget]
    backbone = load_backbone(args.model, precision=args.precision)
    started = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")] if args.rates else None
    results = [sweep_task(name, backbone, budget, seeds, Reference(), only, rates) for name in args.tasks.split(",")]
    if only:
        results = merged(results, args, backbone.precision)
    report = {"budget": args.budget, "settings": budget, "model": args.model,
              "precision": backbone.precision, "command": "python benchmarks/depth_lr.py " + " ".join(sys.argv[1:]),
              "seconds": round(time.time() - started, 1), "tasks": results, "best": best_rates(results),
              "hidden_norms": hidden_norms(backbone, "the movie was a delight from start to finish, and the actors "
                                                     "carried every scene with ease")}
    table = markdown(report)
    print(table)
    write_results("depth_lr", report, "Produced by `benchmarks/depth_lr.py`.\n\n" + table)


if __name__ == "__main__":
    main()
