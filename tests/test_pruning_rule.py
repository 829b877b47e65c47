"""The rule that picks the default pruner from benchmarks/pruning.py's runs, on rows written by hand."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import pruning  # noqa: E402


def _row(task, seed, pruner, steps, seconds, template, dev):
    return {"task": task, "seed": seed, "pruner": pruner, "train_steps": steps, "wall_seconds": seconds,
            "best_template": template, "best_dev": dev, "complete": 24, "pruned": 0, "test": 0.5}


def _runs(hyperband_devs):
    rows = []
    for (task, seed), hb_dev in zip([("rte", 0), ("rte", 1), ("cb", 0)], hyperband_devs):
        rows += [_row(task, seed, "none", 400, 200.0, "A", 0.70),
                 _row(task, seed, "median", 360, 190.0, "A", 0.70),        # holds, saves too little
                 _row(task, seed, "hyperband", 160, 100.0, "B", hb_dev),   # 40% of the steps
                 _row(task, seed, "wilcoxon", 120, 80.0, "C", 0.60)]       # 30% of the steps, never holds
    return pruning.compared(rows)


def test_the_default_is_the_cheapest_pruner_within_the_cap_whose_winner_holds_on_most_runs():
    rows = _runs([0.695, 0.72, 0.60])  # hyperband: 0.5 below none's dev (holds), above it (holds), 10 below (not)
    hyperband = [r for r in rows if r["pruner"] == "hyperband"]
    assert [r["winner_holds"] for r in hyperband] == [True, True, False]
    assert [r["steps_vs_none"] for r in hyperband] == [0.4] * 3 and hyperband[0]["time_vs_none"] == 0.5
    summary, default = pruning.verdict(rows)
    assert {s["pruner"]: (s["steps_vs_none"], s["winner_holds"]) for s in summary} == {
        "median": (0.9, 3), "hyperband": (0.4, 2), "wilcoxon": (0.3, 0)}
    assert default == "hyperband"


def test_no_default_when_no_pruner_meets_the_rule():
    rows = _runs([0.60, 0.60, 0.72])  # hyperband holds on 1 of 3 runs only
    summary, default = pruning.verdict(rows)
    sizes = {"n_trials": 24, "steps": 15, "eval_every": 3, "batch_size": 4, "max_length": 96, "precision": "bf16",
             "model": "m"}
    assert default is None and "no pruner meets it" in pruning.markdown(rows, summary, default, sizes)
