"""Pruning efficiency: the same search (same sampler seed, same trials) under each pruner.

Records total training steps, wall time, the best dev score and that template's test score (scored once, by the
search itself), and the ratios of steps and time against no pruning.

    python benchmarks/pruning.py                      # FewGLUE RTE on SmolLM2-135M
    python benchmarks/pruning.py --task rte --n-trials 12 --steps 12 --eval-every 2 --max-length 96 --precision bf16
                                                      # the committed CPU result
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time

import optuna
from common import DATA, write_results

from autoplace.backbones import PRECISIONS, load_backbone
from autoplace.search.run import search
from autoplace.search.space import default_space_path
from autoplace.search.storage import default_url
from autoplace.search.study import SearchConfig


def run_one(pruner: str, args, backbone) -> dict:
    backbone.caches.clear()  # each search starts cold: cached prefixes and tokens from the last would flatter it
    with tempfile.TemporaryDirectory() as tmp:
        cfg = search_config(pruner, args, tmp)
        started = time.perf_counter()
        found = search(cfg)
        seconds = time.perf_counter() - started
        study = optuna.load_study(storage=cfg.storage, study_name=cfg.study_name)
        steps = sum(t.user_attrs.get("steps", 0) for t in study.trials)
    return {"pruner": pruner, "wall_seconds": round(seconds, 1), "train_steps": steps,
            "complete": found["trials"]["complete"], "pruned": found["trials"]["pruned"], "failed": found["trials"]["fail"],
            "best_template": found["template"], "best_dev": found["dev"], "test": found["test"]}


def warm_up(args) -> float:
    """One untimed 2-trial search first, so that no timed search pays for first-use costs (data loading and
    tokenizing, kernel selection) that the searches after it would reuse."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        search(dataclasses.replace(search_config("none", args, tmp), n_trials=2, steps=args.eval_every))
    return time.perf_counter() - started


def search_config(pruner: str, args, tmp: str) -> SearchConfig:
    return SearchConfig(task=args.task, space=str(default_space_path(args.task)), out=tmp, storage=default_url(tmp),
                        study_name=f"pruning-{pruner}", model=args.model, data_dir=str(DATA / "FewGLUE_32dev"),
                        n_trials=args.n_trials, seed=args.seed, pruner=pruner, steps=args.steps,
                        eval_every=args.eval_every, max_length=args.max_length, precision=args.precision,
                        progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pruners", default="none,median,hyperband,wilcoxon")
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=None, help="default: the search space's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    backbone = load_backbone(args.model, precision=args.precision)  # loaded once, shared by every search
    warm = warm_up(args)
    print(f"== warm-up (untimed): {warm:.0f} s", flush=True)
    rows = []
    for pruner in args.pruners.split(","):
        print(f"== pruner {pruner}", flush=True)
        rows.append(run_one(pruner, args, backbone))
        print(rows[-1], flush=True)
    base = next((r for r in rows if r["pruner"] == "none"), rows[0])
    for r in rows:
        r["steps_vs_none"] = round(r["train_steps"] / base["train_steps"], 3)
        r["time_vs_none"] = round(r["wall_seconds"] / base["wall_seconds"], 3)
    metric = next(iter(rows[0]["best_dev"]))
    lines = [f"{args.task} on {args.model}, {args.n_trials} trials of {args.steps} steps (dev every "
             f"{args.eval_every}), TPE seed {args.seed}; wall time includes the final test scoring.", "",
             "| pruner | complete | pruned | failed | train steps | steps vs none | wall s | time vs none | best dev | "
             "its test |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['pruner']} | {r['complete']} | {r['pruned']} | {r['failed']} | {r['train_steps']} | {r['steps_vs_none']:.2f} | "
              f"{r['wall_seconds']:.0f} | {r['time_vs_none']:.2f} | {r['best_dev'][metric]:.3f} | "
              f"{r['test'][metric]:.3f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    command = "python benchmarks/pruning.py " + " ".join(sys.argv[1:])
    write_results("pruning", {"settings": vars(args), "command": command, "warm_up_seconds": round(warm, 1),
                              "rows": rows}, f"Produced by `{command}`.\n\n" + table)


if __name__ == "__main__":
    main()
