"""The P-tuning paper's placement table, measured: frozen backbone, the seven FewGLUE tasks and MR sentiment.

Rows: zero-shot manual template; the best words of the zero-shot screen (phrasing × label words × calibration,
scored on train and dev only), zero-shot; a PEFT-style prefix (prepended prompt, MLP encoder, random init as PEFT
does); the four fixed placements start / middle / end / mixed with the same total prompt length (the search space's
reference placements, on the built-in default phrasing, so the table shows what the words add); and the template
`autoplace search` finds over words + places (chosen by k-fold over train and dev; with --keep-manual-unless-better,
as a user who wants no worse than their own template runs it: the search's `verdict` is recorded beside its row).
Every trained row gets the same
budget and the same seeds; dev selects the checkpoint, the test split is only reported. Every seed is kept.

    python benchmarks/placement_study.py --budget small --precision bf16 --tasks mr   # one task per sitting
    python benchmarks/placement_study.py --budget full      # a GPU

Runs of single tasks merge into one results file (same budget and seeds), so a study too long for one sitting is
run task by task; `--rows search,late` trains only those rows (and the zero-shot ones), merged into the task's
column. A run whose settings differ from the file's is refused before it starts. `--budget small160` is `small`
with four times the steps:

    python benchmarks/placement_study.py --budget small160 --precision bf16 --tasks mr --rows search
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time

from common import DATA, earlier_run, mean_std, merge_tasks, subset_task, write_results

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS
from autoplace.config import FILLER, Budget, Plan, configs
from autoplace.runner import fit, prepare
from autoplace.study.opening import fit_space
from autoplace.study.run import search
from autoplace.study.space import DEPTH_REFERENCES, REFERENCE_CLASSES, default_space_path, load_space
from autoplace.study.storage import default_url
from autoplace.config import SearchConfig
from autoplace.tasks import get_task

BUDGETS = {
    # small: every trained row gets 40 steps of batch 8. Paid for by: dev scored twice (steps 20 and 40), inputs cut
    # to 96 tokens, bf16 on CPUs with bf16 units (--precision bf16), the prefix cache, fixed test subsets (BoolQ
    # 500, MR 500 of val/test), MR train cut to 512 examples and its dev to 200, and a 10-trial search whose top 2
    # templates are judged by 3-fold cross-validation over train and dev. The search keeps the median pruner, the
    # default when the study's first columns were measured, so that columns run in later sittings stay comparable.
    "small": {"steps": 40, "eval_every": 20, "batch_size": 8, "max_length": 96, "search_trials": 10,
              "confirm_top": 2, "folds": 3, "boolq_test": 500, "mr_test": 500, "mr_train": 512, "mr_dev": 200,
              "wic_test": None, "multirc_questions": 100, "search_pruner": "median", "keep_manual": True},
    "smoke": {"steps": 2, "eval_every": 1, "batch_size": 4, "max_length": 64, "search_trials": 9, "confirm_top": 2,
              "folds": 2, "boolq_test": 40, "mr_test": 40, "mr_train": 40, "mr_dev": 20, "wic_test": 40,
              "multirc_questions": 5, "search_pruner": "median", "keep_manual": True},  # checks the script runs
    # small160: the same, with every prompt (the search's trials too) trained four times longer, dev every 40 steps:
    # where depth needs the steps (MR's depth rows climb 11 to 19 points from 40 to 160, depth_steps.py).
    "small160": {"steps": 160, "eval_every": 40, "batch_size": 8, "max_length": 96, "search_trials": 10,
                 "confirm_top": 2, "folds": 3, "boolq_test": 500, "mr_test": 500, "mr_train": 512, "mr_dev": 200,
                 "wic_test": None, "multirc_questions": 100, "search_pruner": "median", "keep_manual": True},
    "full": {"steps": 100, "eval_every": 10, "batch_size": 8, "max_length": 256, "search_trials": 40,
             "confirm_top": 3, "folds": 4, "boolq_test": None, "mr_test": None, "mr_train": None, "mr_dev": None,
             "wic_test": None, "multirc_questions": None, "search_pruner": "median", "keep_manual": True},
}
ROW_NAMES = {"deep": "deep (every layer)", "late": "late (half depth)"}
SEARCH_ROW = "search over words, places + depth"
# where --keep-manual-unless-better kept the manual template: the winner it set aside, trained and tested the same
# way (reported only, so the study says what keeping the manual template cost or saved; nothing chooses by it)
SET_ASIDE_ROW = "search's winner, set aside for the manual template"
TASKS = ["rte", "cb", "boolq", "copa", "wic", "wsc", "multirc", "mr"]  # the seven FewGLUE tasks and MR
FOLDERS = {name: "MR_snippets" if name == "mr" else "FewGLUE_32dev" for name in TASKS}


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
    if name == "wic":
        keep["test"] = fixed_subset(len(task.load_split("test", data_dir)), budget["wic_test"])
    if name == "multirc":  # whole questions (every option of each), so exact match stays exact
        questions = task.load_split("test", data_dir)["question_id"]
        chosen = set(fixed_subset(len(set(questions)), budget["multirc_questions"]) or [])
        order = list(dict.fromkeys(questions))
        keep["test"] = [i for i, q in enumerate(questions) if order.index(q) in chosen] if chosen else None
    keep = {k: v for k, v in keep.items() if v is not None}
    return (subset_task(task, keep) if keep else task), data_dir, keep


def train_row(task, backbone, data_dir, plan: Plan, seed, budget) -> dict:
    prompt, cfg = configs(plan, Budget(**{k: budget[k] for k in ("steps", "eval_every", "batch_size", "max_length")}),
                          seed)
    run = prepare(task, backbone, prompt, data_dir)
    result = fit(run, cfg, progress=False)
    test = run.evaluate("test")
    return {"seed": seed, "dev": result.dev[task.primary_metric], "test": test[task.primary_metric],
            "test_metrics": test, "train_seconds": round(result.train_seconds, 2), "steps": result.steps_done,
            "restarts": result.restarts}


def plan_of(meta: dict) -> Plan:
    """The plan an exported artifact was trained with."""
    prompt = meta["prompt"]
    return Plan(meta["template"], prompt["encoder"], prompt["init"], meta["train"]["lr"],
                verbalizer=prompt.get("verbalizer"), calibrate=prompt.get("calibrate", False),
                filler=prompt.get("filler", FILLER))


def fixed_placements(space, backbone) -> dict[str, Plan]:
    """The space's reference placements (start / middle / end-only, mixed; deep and late where the space searches
    depth) on its default phrasing and words, each the plan a search's reference trial trains."""
    import optuna
    default_words = dataclasses.replace(space, skeletons=space.skeletons[:1], verbalizers=None,
                                        auto_verbalizers=False, calibrations=("none",), words={},
                                        n_layers=backbone.n_layers if space.needs_layers else 0)
    return {ROW_NAMES.get(name, name): default_words.sample(optuna.trial.FixedTrial(params), backbone.causal)
            for name, params in default_words.references(backbone.causal)
            if name in (*REFERENCE_CLASSES, *DEPTH_REFERENCES)}


def set_aside_plan(verdict: dict | None, study, space, backbone) -> Plan | None:
    """The plan of the winner --keep-manual-unless-better set aside for the manual template; None where the search
    exported its own winner (or an ensemble, which has no one trial)."""
    if not verdict or verdict.get("exported") != "manual" or verdict.get("winner_trial") is None:
        return None
    fitted = dataclasses.replace(space)  # a copy: the fixed rows use the space as shipped
    fit_space(fitted, study, backbone)
    return fitted.plan_of(study.trials[verdict["winner_trial"]], backbone.causal)


def wanted(row: str, only: list[str] | None) -> bool:
    """Whether a row is trained in this run: every row without --rows; the zero-shot rows always (one cheap run)."""
    return only is None or "zero-shot" in row or any(row.startswith(r) for r in only)


def study_task(name: str, backbone, model: str, budget: dict, seeds: list[int], only: list[str] | None = None
               ) -> dict:
    task, data_dir, keep = task_for(name, budget)
    space = load_space(default_space_path(name))
    ref = space.reference
    searched = SEARCH_ROW if space.needs_layers else "search over words + places"  # older columns: no depth
    print(f"== {name}: {searched}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(task=name, space=str(default_space_path(name)), out=tmp, storage=default_url(tmp),
                           study_name=f"bench-{name}", model=model, data_dir=data_dir, precision=backbone.precision,
                           n_trials=budget["search_trials"], seed=0, steps=budget["steps"],
                           eval_every=budget["eval_every"], batch_size=budget["batch_size"],
                           max_length=budget["max_length"], confirm_top=budget["confirm_top"], select="cv",
                           folds=budget["folds"], pruner=budget["search_pruner"], progress=False,
                           keep_manual_unless_better=budget.get("keep_manual", False))
        started = time.time()
        found = search(cfg, task)  # the search sees the same subsets
        search_seconds = time.time() - started
        best = json.loads(open(f"{tmp}/best/template.json").read())
        import optuna
        study = optuna.load_study(storage=default_url(tmp), study_name=cfg.study_name)
        screened = study.user_attrs["words"][0]
        screen = study.user_attrs["screen"]
        set_aside = set_aside_plan(found.get("verdict"), study, space, backbone)
    top = space.skeletons[screened["template"]].manual_template
    plans = {"zero-shot": Plan(space.manual_template, "none", "vocab", ref.lr),
             "best screened words, zero-shot": Plan(top, "none", "vocab", ref.lr, verbalizer=screened["verbalizer"],
                                                    calibrate=screened["calibrate"]),
             "prefix (PEFT-style)": Plan(f"[P:{ref.total_length}] {space.manual_template}", "mlp", "random", ref.lr)}
    plans.update(fixed_placements(space, backbone))
    plans[searched] = plan_of(best)
    if set_aside is not None:
        plans[SET_ASIDE_ROW] = set_aside
    plans = {row: plan for row, plan in plans.items() if wanted(row, only)}
    rows = {}
    for row, plan in plans.items():
        print(f"== {name}: {row}: {plan.template!r} {plan.verbalizer or ''} calibrate={plan.calibrate}", flush=True)
        untrained = plan.encoder == "none" and "[P" not in plan.template  # no prompt: one run is all of it
        rows[row] = {"template": plan.template, "verbalizer": plan.verbalizer, "calibrate": plan.calibrate,
                     "encoder": plan.encoder, "init": plan.init, "lr": plan.lr,
                     "runs": [train_row(task, backbone, data_dir, plan, s, budget)
                              for s in (seeds[:1] if untrained else seeds)]}
    for row in rows.values():
        row["test_mean"], row["test_std"] = mean_std([r["test"] for r in row["runs"]])
        row["dev_mean"], row["dev_std"] = mean_std([r["dev"] for r in row["runs"]])
    column = {"task": name, "metric": task.primary_metric, "subsets": {k: len(v) for k, v in keep.items()},
              "subset_indices": keep, "screen": {"seconds": screen["seconds"], "kept": screen["kept"]}, "rows": rows}
    if searched in rows:  # else the search ran only for its screen: the column keeps the record of its own row's
        column["search"] = {"seconds": round(search_seconds, 1), "trials": found["trials"],
                            "template": found["template"], "dev_interval": found["dev_interval"],
                            "tied": found["tied"], "verdict": found.get("verdict")}
    return column


def markdown(results: list[dict], budget_name: str, seeds: list[int]) -> str:
    names = [r["task"] for r in results]
    rows = list(dict.fromkeys(row for r in results for row in r["rows"]))
    rows = sorted(rows, key=lambda row: row.startswith("search"))  # the searches last, whichever column has them
    metrics = ", ".join(f"{r['task']} {r['metric']}" for r in results)
    lines = [f"Budget `{budget_name}`, seeds {seeds}; test score mean ± std over seeds (dev mean in brackets), in "
             f"each task's primary metric ({metrics}).", "",
             "| row | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in rows:
        cells = []
        for r in results:
            x = r["rows"].get(row)
            cells.append("–" if x is None else
                         f"{100 * x['test_mean']:.1f} ± {100 * x['test_std']:.1f} ({100 * x['dev_mean']:.1f})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Wall time per task: " + ", ".join(f"{r['task']} {r['seconds']:.0f} s (`{r['command']}`, commit "
                                                      f"{r['commit']}, {r['date']})" for r in results) + ".",
              ""]
    verdicts = [(r["task"], r["search"]["verdict"]) for r in results
                if (r.get("search", {}).get("verdict") or {}).get("interval")]
    if verdicts:
        lines += ["The search against the task's own template zero-shot on dev (paired bootstrap 90% interval; "
                  "run with --keep-manual-unless-better, so a winner that is not better exports the manual template): "
                  + "; ".join(f"{task} {v['word']} ({v['difference']:+.3f}, {v['interval'][0]:+.3f} to "
                              f"{v['interval'][1]:+.3f}), exported the {v['exported']}" for task, v in verdicts)
                  + ". Columns without it ran before the verdict existed.", ""]
    lines += [restarts_line(results), "", "Templates:", ""]
    for r in results:
        for row, x in r["rows"].items():
            words = f" {x['verbalizer']}" if x.get("verbalizer") else ""
            calibrated = ", calibrated" if x.get("calibrate") else ""
            lines.append(f"- {r['task']} / {row}: `{x['template']!r}`{words}{calibrated}")
    return "\n".join(lines)


def restarts_line(results: list[dict]) -> str:
    """How many runs runner.fit restarted (a prompt giving one answer to all of dev, trained again from a fresh seed),
    per column, and which columns' rows ran before restarts existed."""
    counts, older = [], []
    for r in results:
        runs = [run for row in r["rows"].values() for run in row.get("runs", [])]
        if runs and all("restarts" in run for run in runs):
            counts.append(f"{r['task']} {sum(run['restarts'] > 0 for run in runs)} of {len(runs)}")
        else:
            older.append(r["task"])
    return ("Runs restarted (a prompt that gave one answer to all of dev, trained again from a fresh seed, dev keeping "
            "the better): " + (", ".join(counts) or "none of these columns") + "."
            + (f" Rows of {', '.join(older)} (or some of them) ran before restarts existed." if older else ""))


def merged_columns(earlier: dict, results: list[dict]) -> list[dict]:
    """This run's columns merged into the earlier run's by row; a search run again that exported its own winner drops
    the set-aside row an earlier search left, which no longer belongs to the column's search."""
    searched_again = {r["task"] for r in results if "search" in r and SET_ASIDE_ROW not in r["rows"]}
    merged = merge_tasks(earlier, results, TASKS)
    for column in merged:
        if column["task"] in searched_again:
            column["rows"].pop(SET_ASIDE_ROW, None)
    return merged


def main() -> None:
    from common import COMMIT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=list(BUDGETS), default="small")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the frozen forward's precision (the small CPU run uses bf16: 1.6x faster on CPUs "
                             "with bf16 instructions)")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite an earlier results file made with other settings")
    parser.add_argument("--rows", help="train only these rows (names or their first words, comma-separated, e.g. "
                                       "'search,late'); the zero-shot rows always run, the search always runs")
    args = parser.parse_args()
    budget, seeds = BUDGETS[args.budget], [int(s) for s in args.seeds.split(",")]
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    backbone = load_backbone(args.model, precision=args.precision)
    settings = {"budget": args.budget, "settings": budget, "seeds": seeds, "model": args.model,
                "precision": backbone.precision}
    earlier = earlier_run(f"placement_study-{args.budget}", settings, args.replace)
    command = "python benchmarks/placement_study.py " + " ".join(sys.argv[1:])
    results = []
    for name in args.tasks.split(","):
        task_started = time.time()
        results.append(study_task(name, backbone, args.model, budget, seeds, rows))
        results[-1].update(seconds=round(time.time() - task_started, 1), command=command, commit=COMMIT,
                           date=time.strftime("%Y-%m-%d"))
        print(f"== {name}: {results[-1]['seconds']:.0f} s", flush=True)
    results = merged_columns(earlier, results)
    table = markdown(results, args.budget, seeds)
    print(table)
    write_results(f"placement_study-{args.budget}", {**settings, "tasks": results},
                  f"Produced task by task by `benchmarks/placement_study.py` (precision {backbone.precision}).\n\n"
                  + table)


if __name__ == "__main__":
    main()
