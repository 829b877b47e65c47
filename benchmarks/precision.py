"""Do scores hold in bf16 on a CPU? fp32 vs bf16 on RTE, CB and MR, dev and test, zero-shot and trained.

`--precision auto` may pick bf16 on CPUs with bf16 units only if it does not cost accuracy. Rows per task and
precision: the zero-shot manual template (one run: nothing is trained), and the space's `mixed` reference placement
on the default phrasing trained for the placement study's small budget (40 steps of batch 8, inputs cut to 96
tokens) at 3 seeds. Same data subsets as the placement study (MR train 512, dev 200, test 500). Train seconds are
measured side by side in this run.

The rule, fixed before the run: scores hold when every zero-shot score moves by at most 1 point or one example of
its split (CB's test has 56: one flipped near-tie is 1.8 points), and every trained 3-seed mean (dev and test) by at
most the larger of 1 point and the fp32 seeds' standard deviation.

    python benchmarks/precision.py                    # all three tasks, about 30 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import time

from common import mean_std, write_results
from placement_study import BUDGETS, fixed_placements, task_for, train_row

from autoplace.backbones import cpu_has_bf16, load_backbone
from autoplace.config import Plan
from autoplace.study.space import default_space_path, load_space


def measure(name: str, precision: str, seeds: list[int], budget: dict) -> dict:
    backbone = load_backbone("smollm2-135m", "cpu", precision=precision)
    task, data_dir, _ = task_for(name, budget)
    space = load_space(default_space_path(name))
    plans = {"zero-shot": (Plan(space.manual_template, "none", "vocab", space.reference.lr), seeds[:1]),
             f"mixed, {budget['steps']} steps": (fixed_placements(space, backbone)["mixed"], seeds)}
    rows = {"sizes": {split: len(task.load_split(split, data_dir)) for split in ("dev", "test")}}
    for row, (plan, row_seeds) in plans.items():
        runs = [train_row(task, backbone, data_dir, plan, seed, budget) for seed in row_seeds]
        rows[row] = {"template": plan.template, "runs": runs,
                     "dev": mean_std([r["dev"] for r in runs]), "test": mean_std([r["test"] for r in runs]),
                     "train_seconds": sum(r["train_seconds"] for r in runs)}
        print(f"{name} {precision} {row}: dev {100 * rows[row]['dev'][0]:.1f} test {100 * rows[row]['test'][0]:.1f} "
              f"({rows[row]['train_seconds']:.0f} s training)", flush=True)
    return rows


def holds(fp32: dict, bf16: dict) -> list[str]:
    """The rule's breaches, as sentences; empty when the scores hold."""
    breaches = []
    for row in scored(fp32):
        for split in ("dev", "test"):
            moved = abs(bf16[row][split][0] - fp32[row][split][0])
            one_example = 1 / fp32["sizes"][split]
            allowed = max(0.01, one_example) if row == "zero-shot" else max(0.01, fp32[row][split][1])
            if moved > allowed + 1e-9:
                breaches.append(f"{row} {split} moved {100 * moved:.1f} points (allowed {100 * allowed:.1f})")
    return breaches


def scored(rows: dict) -> list[str]:
    return [row for row in rows if row != "sizes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rte,cb,mr")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", choices=list(BUDGETS), default="small")
    args = parser.parse_args()
    seeds, budget = [int(s) for s in args.seeds.split(",")], BUDGETS[args.budget]
    started, tasks = time.time(), {}
    for name in args.tasks.split(","):
        by_precision = {p: measure(name, p, seeds, budget) for p in ("fp32", "bf16")}
        tasks[name] = {**by_precision, "breaches": holds(by_precision["fp32"], by_precision["bf16"])}
    verdict = not any(t["breaches"] for t in tasks.values())
    lines = [f"Budget `{args.budget}` ({budget['steps']} steps of batch {budget['batch_size']}, "
             f"{budget['max_length']} tokens), seeds {seeds}; accuracy mean ± std over seeds, in points. "
             f"CPU has bf16 units: {cpu_has_bf16()}.", "",
             "| task | row | fp32 dev | bf16 dev | fp32 test | bf16 test | train s fp32 / bf16 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, t in tasks.items():
        for row in scored(t["fp32"]):
            a, b = t["fp32"][row], t["bf16"][row]
            cell = lambda ms: f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"  # noqa: E731
            speed = (f"{a['train_seconds']:.0f} / {b['train_seconds']:.0f} "
                     f"({a['train_seconds'] / b['train_seconds']:.2f}x)" if b["train_seconds"] else "–")
            lines.append(f"| {name} | {row} | {cell(a['dev'])} | {cell(b['dev'])} | {cell(a['test'])} | "
                         f"{cell(b['test'])} | {speed} |")
    lines += ["", "Rule: every zero-shot score within max(1 point, one example of its split); every trained mean "
              "within max(1 point, fp32 seed std).",
              f"Verdict: scores {'hold' if verdict else 'do not hold'} in bf16."]
    lines += [f"- {name}: {b}" for name, t in tasks.items() for b in t["breaches"]]
    lines.append(f"Wall time: {time.time() - started:.0f} s.")
    table = "\n".join(lines)
    print(table)
    write_results("precision", {"budget": budget, "seeds": seeds, "holds": verdict, "tasks": tasks}, table)


if __name__ == "__main__":
    main()
