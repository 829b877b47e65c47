"""Does the zero-shot screen rank the same candidates first in bf16 and in fp32?

The screen scores every phrasing × label words × calibration forward-only on a few train and dev examples (64 in
all on the FewGLUE tasks), and the placement study's "best screened words" row is its first. That row moved between
runs of the same code on different machines (WiC: 54.4 on 2026-12-04, 52.5 on 2026-12-07), so this screens each
task twice on one machine, with the backbone in bf16 and in fp32, at the placement study's small budget (inputs cut
to 96 tokens, same subsets), and reports where the rankings part: the first candidate of each, how many of the kept
candidates both keep, how many candidates' scores moved and by how much, and the gap between the first two (a
near-tie that one flipped example can reverse). Nothing is trained; the held-out split is not read.

    python benchmarks/screen_precision.py                  # all eight tasks, about 8 minutes on 2 cores
    python benchmarks/screen_precision.py --tasks wic cb
"""
from __future__ import annotations

import argparse
import dataclasses

from common import write_results
from placement_study import BUDGETS, TASKS, task_for

from autoplace.backbones import load_backbone
from autoplace.study.screen import screen
from autoplace.study.space import default_space_path, load_space

PRECISIONS = ("bf16", "fp32")


def screen_task(name: str, backbone, budget: dict) -> dict:
    """The screen's record of one task, cut to what the comparison needs: scores by candidate, kept order, seconds."""
    task, data_dir, _ = task_for(name, budget)
    space = load_space(default_space_path(name))
    space = dataclasses.replace(space, budget=dataclasses.replace(space.budget, max_length=budget["max_length"]))
    _, record = screen(space, task, backbone, data_dir)
    scored = {r["key"]: {"both": r["both"], "train": r["train"], "dev": r["dev"]}
              for r in record["rows"] if r["both"] is not None}
    return {"seconds": record["seconds"], "examples": record["examples"], "metric": record["metric"],
            "kept": record["kept"], "scores": scored}


def compare(by_precision: dict[str, dict]) -> dict:
    """Where the bf16 and fp32 screens of one task part."""
    low, full = (by_precision[p] for p in PRECISIONS)
    shared = low["scores"].keys() & full["scores"].keys()
    moved = {k: full["scores"][k]["both"] - low["scores"][k]["both"] for k in shared
             if full["scores"][k]["both"] != low["scores"][k]["both"]}
    return {"candidates": len(shared), "first": {p: by_precision[p]["kept"][0] for p in PRECISIONS},
            "first_agrees": low["kept"][0] == full["kept"][0],
            "first_scores": {p: by_precision[p]["scores"][by_precision[p]["kept"][0]]["both"] for p in PRECISIONS},
            "kept_both": len(set(low["kept"]) & set(full["kept"])), "keep": len(low["kept"]),
            "moved": len(moved), "max_moved": max(map(abs, moved.values()), default=0.0),
            "bf16_gap": (low["scores"][low["kept"][0]]["both"] - low["scores"][low["kept"][1]]["both"]
                         if len(low["kept"]) > 1 else None)}  # kept is the screen's own order, best first


def table(results: list[dict]) -> str:
    lines = ["Per task: the examples screened (train + dev), the screen's first candidate in bf16 and in fp32 (its "
             "train+dev score; key t.phrasing, v.words, raw/cf calibration), how many of the kept candidates both "
             "precisions keep, how many candidates' scores moved and the largest move, and bf16's gap between its "
             "first two (points of the task's metric; on 64 examples one example is 1.6).", "",
             "| task | examples | candidates | first, bf16 | first, fp32 | same first | kept by both | scores moved "
             "| largest move | bf16 gap, 1st − 2nd | seconds bf16 / fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = r["compare"]
        first = {p: f"{c['first'][p]} ({100 * c['first_scores'][p]:.1f})" for p in PRECISIONS}
        gap = "–" if c["bf16_gap"] is None else f"{100 * c['bf16_gap']:.1f}"
        lines.append(f"| {r['task']} | {sum(r['bf16']['examples'].values())} | {c['candidates']} | {first['bf16']} | "
                     f"{first['fp32']} | "
                     f"{'yes' if c['first_agrees'] else '**no**'} | {c['kept_both']} of {c['keep']} | {c['moved']} | "
                     f"{100 * c['max_moved']:.1f} | {gap} | {r['bf16']['seconds']:.0f} / {r['fp32']['seconds']:.0f} |")
    differ = [r["task"] for r in results if not r["compare"]["first_agrees"]]
    lines += ["", f"The first candidate differs by precision on {len(differ)} of {len(results)} tasks"
              + (f" ({', '.join(differ)})." if differ else ".")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    args = parser.parse_args()
    budget = BUDGETS["small"]
    screens: dict[str, dict] = {name: {} for name in args.tasks}
    for precision in PRECISIONS:  # one backbone at a time: two copies would share the 2 cores' memory bandwidth
        backbone = load_backbone("smollm2-135m", "cpu", precision=precision)
        for name in args.tasks:
            screens[name][precision] = screen_task(name, backbone, budget)
            print(f"{name} {precision}: first {screens[name][precision]['kept'][0]}, kept "
                  f"{screens[name][precision]['kept']}, {screens[name][precision]['seconds']:.0f} s", flush=True)
    results = [{"task": name, **screens[name], "compare": compare(screens[name])} for name in args.tasks]
    markdown = table(results)
    print(markdown)
    write_results("screen_precision", {"settings": {"budget": "small", "max_length": budget["max_length"],
                                                    "model": "smollm2-135m", "tasks": args.tasks},
                                       "tasks": results}, markdown)


if __name__ == "__main__":
    main()
