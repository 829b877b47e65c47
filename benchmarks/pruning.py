"""Pruning efficiency: the same search (same task, same TPE seed) under each pruner and with none.

For every (task, TPE seed): total training steps, wall time, the winner's dev score and its test score (scored once,
by the search itself), the ratios of steps and time against no pruning, and whether the pruned search found the
same winner as the unpruned one, or one within 1 point of its dev. The summary applies the default-pruner rule: at
most 50% of the unpruned training steps, and a winner that holds on most (task, seed) runs.

    python benchmarks/pruning.py --tasks rte --precision bf16    # then --tasks cb: the committed CPU result
                                                                 # (24 trials of 15 steps, TPE seeds 0 and 1)

Runs merge into one results file when their settings match (other tasks or seeds), so a study too long for one
sitting is run task by task.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time

import optuna
from common import COMMIT, DATA, RESULTS, device_tag, write_results

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS
from autoplace.study.run import search
from autoplace.study.space import default_space_path
from autoplace.study.storage import default_url
from autoplace.config import SearchConfig
from autoplace.tasks import get_task

STEPS_CAP, DEV_SLACK = 0.5, 0.01  # the default pruner's rule: ≤ 50% of the unpruned steps; winner within 1 point


def run_one(pruner: str, task: str, seed: int, args, backbone) -> dict:
    backbone.caches.clear()  # each search starts cold: cached prefixes and tokens from the last would flatter it
    with tempfile.TemporaryDirectory() as tmp:
        cfg = search_config(pruner, task, seed, args, tmp)
        started = time.perf_counter()
        found = search(cfg)
        seconds = time.perf_counter() - started
        study = optuna.load_study(storage=cfg.storage, study_name=cfg.study_name)
        steps = sum(t.user_attrs.get("steps", 0) for t in study.trials)
    metric = get_task(task).primary_metric  # what the search selected by (MultiRC: f1a)
    return {"task": task, "seed": seed, "pruner": pruner, "wall_seconds": round(seconds, 1), "train_steps": steps,
            "complete": found["trials"]["complete"], "pruned": found["trials"]["pruned"],
            "failed": found["trials"]["fail"], "best_template": found["template"], "metric": metric,
            "best_dev": found["dev"][metric], "test": found["test"][metric], "commit": COMMIT,
            "date": time.strftime("%Y-%m-%d")}


def warm_up(task: str, args) -> float:
    """One untimed 2-trial search first, so that no timed search pays for first-use costs (data loading and
    tokenizing, kernel selection) that the searches after it would reuse."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        search(dataclasses.replace(search_config("none", task, 0, args, tmp), n_trials=2, steps=args.eval_every))
    return time.perf_counter() - started


def search_config(pruner: str, task: str, seed: int, args, tmp: str) -> SearchConfig:
    return SearchConfig(task=task, space=str(default_space_path(task)), out=tmp, storage=default_url(tmp),
                        study_name=f"pruning-{pruner}", model=args.model, data_dir=str(DATA / "FewGLUE_32dev"),
                        n_trials=args.n_trials, seed=seed, pruner=pruner, steps=args.steps,
                        eval_every=args.eval_every, batch_size=args.batch_size, max_length=args.max_length,
                        precision=args.precision, progress=False)


def compared(rows: list[dict]) -> list[dict]:
    """Each row against the unpruned search of its task and seed: steps and time ratios, and whether its winner
    holds (the same template, or a dev score at most 1 point below)."""
    for row in rows:
        base = next((r for r in rows if (r["task"], r["seed"], r["pruner"]) == (row["task"], row["seed"], "none")),
                    None)
        if base is None:
            continue
        row["steps_vs_none"] = round(row["train_steps"] / base["train_steps"], 3)
        row["time_vs_none"] = round(row["wall_seconds"] / base["wall_seconds"], 3)
        row["winner_holds"] = (row["best_template"] == base["best_template"]
                               or row["best_dev"] >= base["best_dev"] - DEV_SLACK)
    return rows


def verdict(rows: list[dict]) -> tuple[list[dict], str | None]:
    """Per pruner over every (task, seed): mean ratios and how many winners held; and the default the rule picks:
    the fewest steps among pruners within the steps cap whose winner holds on most runs (None: no pruner does)."""
    summary = []
    for pruner in dict.fromkeys(r["pruner"] for r in rows if r["pruner"] != "none" and "steps_vs_none" in r):
        mine = [r for r in rows if r["pruner"] == pruner and "steps_vs_none" in r]
        summary.append({"pruner": pruner, "runs": len(mine),
                        "steps_vs_none": round(statistics.mean(r["steps_vs_none"] for r in mine), 3),
                        "time_vs_none": round(statistics.mean(r["time_vs_none"] for r in mine), 3),
                        "winner_holds": sum(r["winner_holds"] for r in mine)})
    eligible = [s for s in summary if s["steps_vs_none"] <= STEPS_CAP and 2 * s["winner_holds"] > s["runs"]]
    return summary, min(eligible, key=lambda s: s["steps_vs_none"])["pruner"] if eligible else None


def merged(settings: dict, rows: list[dict], replace: bool = False) -> list[dict]:
    """This run's rows, plus an earlier run's for other (task, seed, pruner) triples with the same sizes: a sitting
    may run some pruners of a (task, seed) and a later one the rest."""
    path = RESULTS / f"pruning-{device_tag()}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    sizes = {k: v for k, v in settings.items() if k != "pruners"}
    if replace or not earlier:
        return rows
    if {k: v for k, v in earlier.get("settings", {}).items() if k != "pruners"} != sizes:
        sys.exit(f"{path} holds runs of other sizes ({earlier.get('settings')}); rerun with those, or pass "
                 "--replace to start a new results file")
    ran = {(r["task"], r["seed"], r["pruner"]) for r in rows}
    return [r for r in earlier.get("rows", []) if (r["task"], r["seed"], r["pruner"]) not in ran] + rows


def markdown(rows: list[dict], summary: list[dict], default: str | None, settings: dict) -> str:
    lines = [f"{settings['n_trials']} trials of {settings['steps']} steps (dev every {settings['eval_every']}, batch "
             f"{settings['batch_size']}, inputs cut to {settings['max_length']} tokens, {settings['precision']}) on "
             f"{settings['model']}; wall time includes the screen and the final test scoring. A winner holds when "
             f"it is the unpruned search's template or within {100 * DEV_SLACK:.0f} point of its dev.", "",
             "| task | TPE seed | pruner | complete | pruned | train steps | steps vs none | wall s | time vs none | "
             "winner's dev | its test | winner holds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['task']} | {r['seed']} | {r['pruner']} | {r['complete']} | {r['pruned']} | {r['train_steps']} | "
              f"{r.get('steps_vs_none', float('nan')):.2f} | {r['wall_seconds']:.0f} | "
              f"{r.get('time_vs_none', float('nan')):.2f} | {r['best_dev']:.3f} | {r['test']:.3f} | "
              f"{'yes' if r.get('winner_holds') else 'no'} |" for r in rows]
    lines += ["", "| pruner | runs | mean steps vs none | mean time vs none | winner holds |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s['pruner']} | {s['runs']} | {s['steps_vs_none']:.2f} | {s['time_vs_none']:.2f} | "
              f"{s['winner_holds']} of {s['runs']} |" for s in summary]
    rule = f"≤ {100 * STEPS_CAP:.0f}% of the unpruned steps and a winner that holds on most runs"
    lines += ["", f"Default by the rule ({rule}): " + (f"**{default}**." if default else "no pruner meets it.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rte,cb")
    parser.add_argument("--seeds", default="0,1", help="TPE seeds")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pruners", default="none,median,hyperband,sha,wilcoxon")
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--eval-every", type=int, default=3, help="5 evaluations: wilcoxon needs about 5")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--replace", action="store_true", help="start a new results file instead of merging")
    args = parser.parse_args()
    backbone = load_backbone(args.model, precision=args.precision)  # loaded once, shared by every search
    settings = {k: v for k, v in vars(args).items() if k not in ("tasks", "seeds", "replace")}
    merged(settings, [], args.replace)  # sizes that do not fit the results file stop here, before hours of work
    command = "python benchmarks/pruning.py " + " ".join(sys.argv[1:])
    rows = []
    for task in args.tasks.split(","):
        warm = round(warm_up(task, args), 1)
        print(f"== {task}: warm-up (untimed) {warm:.0f} s", flush=True)
        for seed in map(int, args.seeds.split(",")):
            for pruner in args.pruners.split(","):
                rows.append(run_one(pruner, task, seed, args, backbone) | {"command": command,
                                                                           "warm_up_seconds": warm})
                print(json.dumps(rows[-1]), flush=True)
            record(settings, rows, args.replace)  # after each (task, seed): a sitting cut short keeps its runs


def record(settings: dict, rows: list[dict], replace: bool) -> None:
    everything = compared(merged(settings, rows, replace))
    summary, default = verdict(everything)
    table = markdown(everything, summary, default, settings)
    print(table, flush=True)
    commands = sorted({f"`{r['command']}` (commit {r['commit']}, {r['date']})" for r in everything})
    write_results("pruning", {"settings": settings, "rows": everything, "summary": summary, "default": default},
                  "Produced by " + "; ".join(commands) + ". Each search ran alone on the machine, after an untimed "
                  "warm-up search per task, and starts with an empty prefix cache.\n\n" + table)


if __name__ == "__main__":
    main()
