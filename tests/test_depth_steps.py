"""The task-by-task benchmarks never lose an earlier run: one with other settings is refused before it starts, one
with the same settings merges by task (and, for depth_steps, by row); the screened-phrasing rows put the same slots
into the screened skeleton with the screened words."""
import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402
import depth_steps  # noqa: E402

from autoplace.study.space import default_space_path, load_space  # noqa: E402

SETTINGS = {"settings": {"steps": 160, "eval_every": 40, "batch_size": 8}, "seeds": [0, 1, 2], "model": "m",
            "precision": "bf16"}


def _row(test):
    return {"test_mean": test, "test_std": 0.0, "dev_mean": test, "dev_std": 0.0, "encoder": "lstm", "lr": 0.03,
            "template": "t"}


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "REPO", tmp_path.parent)
    earlier = {**SETTINGS, "tasks": [{"task": "mr", "rows": {"late (half depth)": _row(0.85)}}]}
    (tmp_path / f"depth_steps-{common.device_tag()}.json").write_text(json.dumps(earlier))
    return tmp_path


def test_a_run_with_other_settings_is_refused_in_one_line_and_the_file_is_kept(results_dir):
    path = results_dir / f"depth_steps-{common.device_tag()}.json"
    before = path.read_text()
    with pytest.raises(SystemExit) as refused:
        common.earlier_run("depth_steps", {**SETTINGS, "settings": {**SETTINGS["settings"], "steps": 40}})
    message = str(refused.value)
    assert "\n" not in message and "settings.steps 160 here, 40 in this run" in message and "--replace" in message
    assert path.read_text() == before
    assert common.earlier_run("depth_steps", {**SETTINGS, "seeds": [0]}, replace=True) == {}


def test_the_same_settings_or_a_new_budget_key_give_the_earlier_run_back(results_dir):
    assert common.earlier_run("depth_steps", SETTINGS)["tasks"][0]["task"] == "mr"
    grown = {**SETTINGS, "settings": {**SETTINGS["settings"], "wic_test": None}}  # a key added for new tasks
    assert common.changed_settings(SETTINGS, grown) == {}
    assert common.earlier_run("depth_steps", grown)["tasks"][0]["rows"]["late (half depth)"]["test_mean"] == 0.85
    assert common.changed_settings(SETTINGS, {**SETTINGS, "model": "n"}) == {"model": ("m", "n")}


def test_a_rerun_of_some_rows_keeps_the_rows_and_tasks_it_did_not_run(results_dir):
    earlier = common.earlier_run("depth_steps", SETTINGS)
    screened = "late (half depth)" + depth_steps.ON_SCREENED
    new = [{"task": "mr", "rows": {screened: _row(0.9)}}, {"task": "cb", "rows": {"late (half depth)": _row(0.6)}}]
    merged = common.merge_tasks(earlier, [*new, {"task": "mr@32", "rows": {}}], depth_steps.TASKS)
    assert [t["task"] for t in merged] == ["cb", "mr", "mr@32"]  # the study's order, whatever order they ran in
    tasks = {t["task"]: t for t in merged[:2]}
    assert {r: x["test_mean"] for r, x in tasks["mr"]["rows"].items()} == {"late (half depth)": 0.85, screened: 0.9}
    table = depth_steps.markdown(SETTINGS, list(tasks.values()))
    line = next(x for x in table.splitlines() if x.startswith(f"| {screened}, 160 steps"))
    assert line.split(" | ")[1:] == ["–", "90.0 ± 0.0 (90.0) |"]  # cb has no such row


def test_the_screened_rows_put_the_late_slot_into_the_screened_skeleton_with_its_words(tiny_gpt2, monkeypatch):
    space = load_space(default_space_path("boolq"))
    skeleton = space.skeletons[2]
    words = {"false": " No", "true": " Yes"}
    monkeypatch.setattr(depth_steps, "study_rows", lambda name: {
        depth_steps.SCREENED: {"template": skeleton.manual_template, "verbalizer": words, "calibrate": True}})
    default = depth_steps.plans_for("boolq", tiny_gpt2, "default")
    plans = depth_steps.plans_for("boolq", tiny_gpt2, "screened")
    assert list(plans) == [row + depth_steps.ON_SCREENED for row in default]
    late = plans["late (half depth)" + depth_steps.ON_SCREENED]
    assert late.verbalizer == words and late.calibrate is True
    assert late.lr == default["late (half depth)"].lr and late.encoder == default["late (half depth)"].encoder
    slot = late.template.split("[P:")[1].split("]")[0]
    assert late.template.replace(f"[P:{slot}] ", "") == skeleton.manual_template != space.manual_template


def test_a_screened_phrasing_the_space_lacks_is_refused(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(depth_steps, "study_rows", lambda name: {
        depth_steps.SCREENED: {"template": "{passage} {question}? [MASK]", "verbalizer": None}})
    with pytest.raises(SystemExit, match="is no skeleton of"):
        depth_steps.plans_for("boolq", tiny_gpt2, "screened")
    monkeypatch.setattr(depth_steps, "study_rows", lambda name: {})
    with pytest.raises(SystemExit, match="run benchmarks/placement_study.py --tasks boolq first"):
        depth_steps.plans_for("boolq", tiny_gpt2, "screened")


def test_the_tally_counts_trained_rows_of_both_files_against_the_better_zero_shot_row():
    import depth_tally

    def rows(**scores):  # row name -> (test, dev)
        return {name: {**_row(test), "dev_mean": dev} for name, (test, dev) in scores.items()}
    study = {"settings": {"steps": 40}, "tasks": [
        {"task": "cb", "metric": "acc", "rows": rows(**{"zero-shot": (0.66, 0.6), "best screened words, zero-shot":
                                                        (0.64, 0.7), "start-only": (0.68, 0.8),
                                                        "search over words, places + depth": (0.9, 0.9)})},
        {"task": "mr", "metric": "acc", "rows": rows(**{"zero-shot": (0.55, 0.5), "best screened words, zero-shot":
                                                        (0.75, 0.8), "late (half depth)": (0.67, 0.7)})}]}
    longer = {"settings": {"steps": 160}, "tasks": [
        {"task": "mr", "rows": rows(**{"late (half depth)": (0.85, 0.84), "deep (every layer)": (0.7, 0.9)})}]}
    tally = {t["task"]: t for t in depth_tally.tally(study, longer)}
    assert list(tally) == ["cb", "mr"]  # the study's task order
    assert tally["cb"]["zero_shot"] == 0.66 and tally["cb"]["best"]["row"] == "start-only, 40 steps"  # not the search
    assert tally["cb"]["above"] and [r["row"] for r in tally["cb"]["tried"]] == ["start-only, 40 steps"]
    assert tally["mr"]["best"]["row"] == "late (half depth), 160 steps" and tally["mr"]["above"]
    assert tally["mr"]["dev_pick"]["row"] == "deep (every layer), 160 steps" and not tally["mr"]["dev_pick_above"]
    assert "2 of 2 tasks (cb, mr); dev's pick above them: 1 of 2 (cb)" in depth_tally.markdown(list(tally.values()))
    # each search row against the best fixed row, zero-shot rows included; a 160-step search file where one exists
    for task in study["tasks"]:
        for row in task["rows"].values():
            row["template"] = "{sentence} [MASK]"
    search160 = {"settings": {"steps": 160}, "tasks": [
        {"task": "mr", "rows": rows(**{"search over words, places + depth": (0.84, 0.88),
                                       depth_tally.SET_ASIDE_ROW: (0.8, 0.9)})}]}
    for row in search160["tasks"][0]["rows"].values():
        row["template"] = "{sentence} [P:3@15] [MASK]"
    selection = {"settings": {"steps": 40}, "tasks": [  # searches exporting the winner and its dev ties averaged
        {"task": "mr", "searches": [{}, {}, {}], "summary": {depth_tally.TIED_RULE: 0.86, "best by dev": 0.5}}]}
    checks = depth_tally.search_check([study, search160], study, longer, selection)
    # mr's 40-step placement file has no search; its selection row comes last
    assert [(c["task"], c["steps"]) for c in checks] == [("cb", 40), ("mr", 160), ("mr", 40)]
    assert checks[2]["export"] == "--ensemble tied, 3 searches" and abs(checks[2]["gap"] - 0.01) < 1e-9
    assert checks[0]["best_fixed"]["row"] == "start-only, 40 steps" and checks[0]["gap"] > 0
    assert checks[1]["best_fixed"]["row"] == "late (half depth), 160 steps" and checks[1]["dev_agrees"]
    assert abs(checks[1]["gap"] + 0.01) < 1e-9  # the search's row, not the winner it set aside
    assert (checks[0]["set_aside"], checks[1]["set_aside"]) == (None, 0.8)
    table = depth_tally.search_markdown(checks)
    assert ("| mr | 84.0 (160) | placement study | late (half depth), 160 steps: 85.0 | -1.0 (within 1) | 88.0 vs "
            "84.0: search at or above | 80.0 |") in table
    assert table.splitlines()[4].endswith("search at or above | – |")  # cb: nothing set aside
    assert table.splitlines()[-1] == ("| mr | 86.0 (40) | --ensemble tied, 3 searches | late (half depth), 160 steps: "
                                      "85.0 | +1.0 (at or above) | – | – |")


def test_mr_at_32_cuts_train_and_dev_to_fewglue_sizes_and_nothing_else_may_be_cut():
    budget = dict(depth_steps.BUDGETS["small"])
    name, cut = depth_steps.few_shot("mr@32", budget)
    assert name == "mr" and (cut["mr_train"], cut["mr_dev"]) == (32, 32) and cut["mr_test"] == budget["mr_test"]
    assert depth_steps.few_shot("cb", budget) == ("cb", budget)
    _, _, keep = depth_steps.task_for(name, cut)
    assert (len(keep["train"]), len(keep["dev"]), len(keep["test"])) == (32, 32, budget["mr_test"])
    for bad in ("cb@32", "mr@x"):
        with pytest.raises(SystemExit, match="only MR may be cut"):
            depth_steps.few_shot(bad, budget)
