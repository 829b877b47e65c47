"""Which trial should a search export when dev has 32 examples? Selection rules compared on the same studies.

On FewGLUE's 32 dev examples most of a search's trials are tied with its winner (inside the winner's 90% bootstrap
interval on dev): the placement study's CB search at 40 steps had 5 such trials, and exported one that scored 60.1
on test where a fixed placement it had also trained scored 70.2. This runs the search at the placement study's small
budget and subsets (no --keep-manual-unless-better), once per search seed, with `--select cv` over the top 3 (which
changes no trial, only what is exported), and reads every completed trial's stored prompt on test, to compare on the
same trials:

- best by dev: the trial `--select dev` exports (the default);
- top 3 averaged: the three best distinct templates' calibrated label probabilities averaged (`--ensemble 3`, as
  PET merges its patterns);
- tied averaged: the winner and every trial tied with it on dev, averaged (`--ensemble tied`, which leaves
  out a tied trial that gave one answer to all of dev; the CB and MR columns of commit 1e7a312 predate that rule);
- a random tied trial: the mean test score of the winner and its ties (what a pick among them gets on average);
- cv among the top 2: of the two best distinct templates by dev, the one with the best mean on 3 folds of train ∪
  dev (`--select cv --confirm-top 2 --folds 3`, the placement study's search);
- cv among the top 3: the same over three (`--select cv --confirm-top 3 --folds 3`, what this search exports);
- best by test: the best single trial, chosen on test, an upper bound no rule can reach.

A cv rule's score is that of the chosen trial's stored prompt, which is what --select cv retrains it to (the same
plan, seed and budget). Columns run before the cv rules existed show "–" for them.

Only the test split is read for these figures; nothing is chosen by it but the upper bound. Results are written
after each search and merged by task and seed into an earlier run with the same settings (`--seeds 2` adds a third
search to a column of two).

    python benchmarks/selection.py --tasks cb --seeds 0,1,2 --precision bf16

    python benchmarks/selection.py --tasks mr --seeds 0,1,2 --budget small160 --precision bf16

Results go to results/selection-BUDGET-DEVICE.json for bf16 (the first columns) and to
selection-BUDGET-PRECISION-DEVICE.json otherwise, so a machine without bf16 units adds a file of its own; each budget
has its file, since a 160-step search is compared with the 160-step rows (placement_study-small160, depth_steps).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

from common import COMMIT, earlier_run, write_results
from placement_study import BUDGETS, TASKS, task_for

from autoplace.backbones import load_backbone
from autoplace.config import PRECISIONS, SearchConfig
from autoplace.ensemble import Ensemble
from autoplace.study.run import search
from autoplace.study.space import default_space_path
from autoplace.study.storage import default_url
from autoplace.study.trials import load_existing, load_trial, ranked_trials
from autoplace.study.winner import tied_trials, top_distinct

CV_RULES = {"cv among the top 2": 2, "cv among the top 3": 3}
RULES = ("best by dev", "top 3 averaged", "tied averaged", "a random tied trial", *CV_RULES, "best by test")
TOP_K = 3


def select_on(task, data_dir: str, space: str, backbone, model: str, budget: dict, seed: int) -> dict:
    """One search (seed `seed`), then each rule's test score on its trials, and every trial's dev and test."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(task=task.name, space=space, out=tmp, storage=default_url(tmp),
                           study_name=f"select-{task.name}", model=model, data_dir=data_dir,
                           precision=backbone.precision, n_trials=budget["search_trials"], seed=seed,
                           steps=budget["steps"], eval_every=budget["eval_every"], batch_size=budget["batch_size"],
                           max_length=budget["max_length"], pruner=budget["search_pruner"], progress=False,
                           select="cv", confirm_top=max(CV_RULES.values()), folds=budget["folds"])
        started = time.time()
        found = search(cfg, task)
        seconds = time.time() - started
        study = load_existing(cfg.storage, cfg.study_name)
        onto = SimpleNamespace(task=task, backbone=backbone)
        ranked = ranked_trials(study)
        runs = {t.number: load_trial(study, t, data_dir, onto=onto)[0] for t in ranked}
        metric = task.primary_metric
        tests = {n: run.evaluate("test")[metric] for n, run in runs.items()}
        winner = ranked[0]
        together = [t.number for t in tied_trials(study, ranked, runs[winner.number])]  # what --ensemble tied takes
        averaged = {"top 3 averaged": [t.number for t in top_distinct(ranked, TOP_K)], "tied averaged": together}
        scores = {"best by dev": tests[winner.number],
                  **{rule: Ensemble([runs[n] for n in members]).evaluate("test")[metric]
                     for rule, members in averaged.items()},
                  "a random tied trial": statistics.mean(tests[n] for n in together),
                  **{rule: tests[cv_choice(study, k)] for rule, k in CV_RULES.items()},
                  "best by test": max(tests.values())}
    return {"seed": seed, "seconds": round(seconds, 1), "exported_test": found["test"][metric],
            "members": {**averaged, "best by dev": [winner.number]}, "scores": scores,
            "cv": study.user_attrs["cv"]["candidates"],
            "trials": [{"number": t.number, "template": t.user_attrs["template"], "dev": t.value,
                        "test": tests[t.number], "reference": t.user_attrs.get("reference"),
                        "one_answer": t.user_attrs.get("one_answer", False)} for t in ranked]}


def cv_choice(study, k: int) -> int:
    """The trial --select cv would export with --confirm-top k, read off the cross-validation of the top
    max(CV_RULES) the search ran: its candidates come in rank order, so the first k are those it would have run."""
    candidates = study.user_attrs["cv"]["candidates"][:k]
    return max(candidates, key=lambda r: (not r["one_answer"], r["mean"], r["search_dev"]))["trial"]


def summarise(column: dict) -> dict:
    """Each rule's mean test score over the column's searches (None for a rule its searches predate)."""
    return {rule: (statistics.mean(s["scores"][rule] for s in column["searches"])
                   if all(rule in s["scores"] for s in column["searches"]) else None) for rule in RULES}


def merged(earlier: dict, column: dict) -> list[dict]:
    """The earlier columns, in TASKS order, with this task's searches merged in by seed: a seed run again replaces
    its search, the others are kept, so a machine too slow for a task's three searches in one sitting runs them
    seed by seed (each search keeps the command and commit it ran at)."""
    columns = {c["task"]: c for c in earlier.get("tasks", [])}
    before = columns.get(column["task"], {})
    ran = {s["seed"] for s in column["searches"]}
    kept = [{**provenance(before), **s} for s in before.get("searches", []) if s.get("seed") not in ran]
    searches = sorted(kept + [{**provenance(column), **s} for s in column["searches"]], key=lambda s: s["seed"])
    columns[column["task"]] = {**column, "searches": searches}
    columns[column["task"]]["summary"] = summarise(columns[column["task"]])
    return [columns[t] for t in TASKS if t in columns]


def provenance(column: dict) -> dict:
    return {key: column[key] for key in ("command", "commit", "date") if key in column}


def wall_time(column: dict) -> str:
    """The column's search seconds and where they came from: one run, or each run and the seeds it searched."""
    runs: dict[tuple, list] = {}
    for one in column["searches"]:
        where = {**provenance(column), **provenance(one)}
        runs.setdefault((where["command"], where["commit"], where["date"]), []).append(one)
    seconds = sum(s["seconds"] for s in column["searches"])
    if len(runs) == 1:
        (command, commit, date), = runs
        return f"{column['task']} {seconds:.0f} s of search (`{command}`, commit {commit}, {date})"
    return (f"{column['task']} {seconds:.0f} s of search (" + "; ".join(
        f"seed {', '.join(str(s['seed']) for s in searches)}: `{command}`, commit {commit}, {date}"
        for (command, commit, date), searches in runs.items()) + ")")


def markdown(columns: list[dict]) -> str:
    lines = ["Test score of what each rule exports, mean over search seeds (each search's own figures in brackets); "
             "\"tied\" trials lie inside the winner's 90% bootstrap interval on dev. Best by test is chosen on test: "
             "an upper bound, not a rule.", "",
             "| rule | " + " | ".join(c["task"] for c in columns) + " |", "| --- |" + " --- |" * len(columns)]
    for rule in RULES:
        cells = ["–" if c["summary"].get(rule) is None else
                 f"{100 * c['summary'][rule]:.1f} (" + ", ".join(f"{100 * s['scores'][rule]:.1f}"
                                                                 for s in c["searches"]) + ")" for c in columns]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    ties = ", ".join(f"{c['task']} {'/'.join(str(len(s['members']['tied averaged'])) for s in c['searches'])}"
                     for c in columns)
    lines += ["", f"Trials averaged in \"tied averaged\" (the winner and its ties), per search: {ties}. Wall time: "
              + ", ".join(wall_time(c) for c in columns) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="cb,mr")
    parser.add_argument("--seeds", default="0,1,2", help="search seeds (the sampler's and the trials' training)")
    parser.add_argument("--budget", choices=("small", "small160", "smoke"), default="small",
                        help="small160: every trial trained 160 steps, where MR's depth rows climb (depth_steps.py)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite an earlier results file made with other settings")
    args = parser.parse_args()
    budget, seeds = BUDGETS[args.budget], [int(s) for s in args.seeds.split(",")]
    tasks = args.tasks.split(",")
    if unknown := [t for t in tasks if t not in TASKS]:
        raise SystemExit(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    backbone = load_backbone(args.model, precision=args.precision)
    settings = {"budget": args.budget, "settings": budget, "model": args.model, "precision": backbone.precision}
    results = f"selection-{args.budget}" + ("" if backbone.precision == "bf16" else f"-{backbone.precision}")
    earlier = earlier_run(results, settings, args.replace)
    command = "python benchmarks/selection.py " + " ".join(sys.argv[1:])
    for name in tasks:
        task, data_dir, _ = task_for(name, budget)
        column = {"task": name, "metric": task.primary_metric, "searches": [], "command": command, "commit": COMMIT,
                  "date": time.strftime("%Y-%m-%d")}
        for seed in seeds:
            print(f"== {name}: search seed {seed}", flush=True)
            column["searches"].append(select_on(task, data_dir, str(default_space_path(name)), backbone, args.model,
                                                budget, seed))
            print(f"== {name} seed {seed}: " + ", ".join(f"{rule} {100 * v:.1f}" for rule, v in
                                                        column["searches"][-1]["scores"].items()), flush=True)
            earlier = {**settings, "tasks": merged(earlier, column)}
            write_results(results, earlier, markdown(earlier["tasks"]))
    print(markdown(earlier["tasks"]))


if __name__ == "__main__":
    main()
