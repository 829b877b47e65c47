"""Where does a trained prompt beat both zero-shot rows? The tally of issue 28, counted from the results files.

Reads the placement study (`placement_study-small-DEVICE.json`: 40-step rows; `placement_study-small160-DEVICE.json`,
where run: its search at 160 steps), the longer depth runs (`depth_steps-DEVICE.json`) and the selection runs
(`selection-small-DEVICE.json`: searches exporting the winner with its dev ties averaged), trains nothing, and writes
per task: the better zero-shot row, the best trained row by 3-seed test mean (the issue's yardstick; a choice made on
test, so an upper bound, not something a user could pick), the trained row dev would pick (the highest dev mean, what
a user could pick), and every trained row tried with its steps, encoder and learning rate; and, for each search row,
how far it is from the best fixed row of any kind (zero-shot or trained, by test), and whether dev ranked the two the
same way. Counting by hand from two tables went wrong before; this counts from the JSON.

    python benchmarks/depth_tally.py
"""
from __future__ import annotations

import json

from common import RESULTS, device_tag, write_results
from placement_study import SET_ASIDE_ROW, TASKS

ZERO_SHOT = ("zero-shot", "best screened words, zero-shot")
TIED_RULE = "tied averaged"  # selection.py's rule that --ensemble tied exports


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


def by_task(results: dict) -> dict[str, dict]:
    """A results file's columns by task, each knowing the steps its rows trained."""
    return {t["task"]: {**t, "steps": results["settings"]["steps"]} for t in results.get("tasks", [])}


def tally(study: dict, longer: dict) -> list[dict]:
    per_task, more = by_task(study), by_task(longer)
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


def best_fixed(name: str, per_task: dict, more: dict) -> dict:
    """The best fixed row of a task by test mean: zero-shot or trained, any budget."""
    rows = per_task[name]["rows"]
    fixed = trained_rows(per_task[name], more.get(name, {})) + [
        {"row": r, "test": rows[r]["test_mean"], "dev": rows[r]["dev_mean"]} for r in ZERO_SHOT if r in rows]
    return max(fixed, key=lambda r: r["test"])


def search_check(searches: list[dict], study: dict, longer: dict, selection: dict) -> list[dict]:
    """Each search row against the best fixed row of its task, by test mean: the placement study's searches (what
    they exported), then selection.py's searches exporting the winner with its dev ties averaged (--ensemble tied)."""
    per_task, more = by_task(study), by_task(longer)
    out = []
    for source in searches:
        for task in [t for t in source["tasks"] if t["task"] in per_task]:
            found = [(name, row) for name, row in task["rows"].items() if name.startswith("search over")]
            if not found:
                continue
            name, row = found[0]
            best = best_fixed(task["task"], per_task, more)
            out.append({"task": task["task"], "steps": source["settings"]["steps"], "export": "placement study",
                        "test": row["test_mean"], "dev": row["dev_mean"], "template": row["template"],
                        "best_fixed": best, "gap": row["test_mean"] - best["test"],
                        "dev_agrees": row["dev_mean"] >= best["dev"],
                        "set_aside": (task["rows"][SET_ASIDE_ROW]["test_mean"] if SET_ASIDE_ROW in task["rows"]
                                      else None)})
    for task in [t for t in selection.get("tasks", []) if t["task"] in per_task]:
        best, test = best_fixed(task["task"], per_task, more), task["summary"][TIED_RULE]
        out.append({"task": task["task"], "steps": selection["settings"]["steps"],
                    "export": f"--ensemble tied, {len(task['searches'])} searches", "test": test, "dev": None,
                    "template": None, "best_fixed": best, "gap": test - best["test"], "dev_agrees": None,
                    "set_aside": None})
    return out


def search_markdown(checks: list[dict]) -> str:
    lines = ["The search's row against the best fixed row of its task (zero-shot or trained, any budget; chosen on "
             "test). \"placement study\" rows are that study's search (3 seeds); \"--ensemble tied\" rows are "
             "`selection.py`'s searches at the same budget, exporting the winner and its dev ties averaged. \"dev\" "
             "says whether the search's dev mean is at or above that row's, i.e. whether a gap on test is one dev "
             "could not see (– where the ensemble's dev was not recorded). \"set aside\" is the test mean of the "
             "search's own winner where --keep-manual-unless-better exported the manual template instead (– where it "
             "was not measured or not set aside).", "",
             "| task | search (steps) | export | best fixed row (test) | search − best | dev | set aside |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in checks:
        points = round(100 * c["gap"], 1)  # judged as printed, so that 84.0 against 85.0 is "within 1"
        verdict = "at or above" if points >= 0 else ("within 1" if points >= -1 else "below")
        set_aside = "–" if c["set_aside"] is None else f"{100 * c['set_aside']:.1f}"
        dev = ("–" if c["dev"] is None else f"{100 * c['dev']:.1f} vs {100 * c['best_fixed']['dev']:.1f}: "
               f"{'search at or above' if c['dev_agrees'] else 'search below'}")
        lines.append(f"| {c['task']} | {100 * c['test']:.1f} ({c['steps']}) | {c['export']} | "
                     f"{c['best_fixed']['row']}: {100 * c['best_fixed']['test']:.1f} | {points:+.1f} ({verdict}) | "
                     f"{dev} | {set_aside} |")
    return "\n".join(lines)


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
    sources = [p for p in (RESULTS / f"placement_study-small-{device_tag()}.json",
                           RESULTS / f"placement_study-small160-{device_tag()}.json", path) if p.is_file()]
    searches = [json.loads(p.read_text()) for p in sources if p.name.startswith("placement_study")]
    chosen = RESULTS / f"selection-small-{device_tag()}.json"
    selection = json.loads(chosen.read_text()) if chosen.is_file() else {}
    sources += [chosen] if chosen.is_file() else []
    rows = tally(study, longer)
    checks = search_check(searches, study, longer, selection)
    table = markdown(rows) + "\n\n" + search_markdown(checks)
    print(table)
    write_results("depth_tally", {"sources": [p.name for p in sources], "tasks": rows, "searches": checks},
                  "Produced by `benchmarks/depth_tally.py` from the results files (nothing trained).\n\n" + table)


if __name__ == "__main__":
    main()
