"""Where does a trained prompt beat both zero-shot rows? The tally of issue 28, counted from the results files.

Reads the placement study (`placement_study-small-DEVICE.json`: 40-step rows) and the longer depth runs
(`depth_steps-DEVICE.json`), trains nothing, and writes per task: the better zero-shot row, the best trained row by
3-seed test mean (the issue's yardstick; a choice made on test, so an upper bound, not something a user could pick),
the trained row dev would pick (the highest dev mean, what a user could pick), and every trained row tried with its
steps, encoder and learning rate. Counting by hand from two tables went wrong before; this counts from the JSON.

    python benchmarks/depth_tally.py
"""
from __future__ import annotations

import json

from common import RESULTS, device_tag, write_results
from placement_study import TASKS

ZERO_SHOT = ("zero-shot", "best screened words, zero-shot")


def trained_rows(study: dict, longer: dict) -> list[dict]:
    """Every trained row of one task: the study's fixed rows (not its searches) and the longer runs' rows."""
    out = []
    for source, steps in ((study, study["steps"]), (longer, longer.get("steps"))):
        for name, row in source.get("rows", {}).items():
            if name in ZERO_SHOT or name.startswith("search"):
                continue
            out.append({"row": f"{name}, {steps} steps", "test": row["test_mean"], "dev": row["dev_mean"],
                        "encoder": row["encoder"], "lr": row["lr"], "steps": steps})
    return out


def tally(study: dict, longer: dict) -> list[dict]:
    per_task = {t["task"]: {**t, "steps": study["settings"]["steps"]} for t in study["tasks"]}
    more = {t["task"]: {**t, "steps": longer["settings"]["steps"]} for t in longer.get("tasks", [])}
    out = []
    for name in [t for t in TASKS if t in per_task]:
        zero = max((per_task[name]["rows"][r] for r in ZERO_SHOT if r in per_task[name]["rows"]),
                   key=lambda x: x["test_mean"])["test_mean"]
        rows = trained_rows(per_task[name], more.get(name, {}))
        by_test = max(rows, key=lambda r: r["test"])
        by_dev = max(rows, key=lambda r: r["dev"])  # ties: the first listed
        out.append({"task": name, "metric": per_task[name]["metric"], "zero_shot": zero, "best": by_test,
                    "above": by_test["test"] > zero, "dev_pick": by_dev, "dev_pick_above": by_dev["test"] > zero,
                    "tried": rows})
    return out


def markdown(rows: list[dict]) -> str:
    above = [r["task"] for r in rows if r["above"]]
    picked = [r["task"] for r in rows if r["dev_pick_above"]]
    lines = ["Test scores (3-seed means) of the better zero-shot row and of trained rows; \"best trained\" is chosen "
             "on test (the issue's yardstick, an upper bound), \"dev's pick\" is the trained row with the highest "
             "dev mean (what a user could choose).", "",
             "| task | better zero-shot | best trained (test) | dev's pick (test) | trained rows tried |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        recipes = sorted({f"{x['encoder']} {x['lr']:g} × {x['steps']}" for x in r["tried"]})
        lines.append(f"| {r['task']} | {100 * r['zero_shot']:.1f} | {r['best']['row']}: "
                     f"{'**' if r['above'] else ''}{100 * r['best']['test']:.1f}{'**' if r['above'] else ''} | "
                     f"{r['dev_pick']['row']}: {100 * r['dev_pick']['test']:.1f} | {len(r['tried'])} rows; "
                     f"encoder lr × steps: {', '.join(recipes)} |")
    lines += ["", f"A trained row above both zero-shot rows (bold): {len(above)} of {len(rows)} tasks "
                  f"({', '.join(above) or 'none'}); dev's pick above them: {len(picked)} of {len(rows)} "
                  f"({', '.join(picked) or 'none'})."]
    return "\n".join(lines)


def main() -> None:
    study = json.loads((RESULTS / f"placement_study-small-{device_tag()}.json").read_text())
    path = RESULTS / f"depth_steps-{device_tag()}.json"
    longer = json.loads(path.read_text()) if path.is_file() else {}
    rows = tally(study, longer)
    table = markdown(rows)
    print(table)
    write_results("depth_tally", {"sources": [f"placement_study-small-{device_tag()}.json", path.name],
                                  "tasks": rows}, "Produced by `benchmarks/depth_tally.py` from the results files "
                                                  "(nothing trained).\n\n" + table)


if __name__ == "__main__":
    main()
