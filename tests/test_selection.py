"""benchmarks/selection.py: every rule is scored on the trials of one real search (tiny-gpt2, a toy task), and the
rule the search itself exports (cv among the top 3) gives the score the search exported."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import selection  # noqa: E402


def test_every_rule_is_scored_on_the_same_searchs_trials(toy_task_file, tmp_path, tiny_gpt2):
    from test_depth import DEPTH_SPACE

    from autoplace.tasks import get_task
    (tmp_path / "space.yaml").write_text(DEPTH_SPACE)
    task = get_task(str(toy_task_file))
    budget = {**selection.BUDGETS["smoke"], "search_trials": 6}
    out = selection.select_on(task, None, str(tmp_path / "space.yaml"), tiny_gpt2, "tiny-gpt2", budget, seed=0)
    assert list(out["scores"]) == list(selection.RULES)
    trials, scores = out["trials"], out["scores"]
    assert len(trials) >= 3 and all(0 <= t["test"] <= 1 for t in trials)
    assert [t["dev"] for t in trials] == sorted((t["dev"] for t in trials), reverse=True)  # ranked by dev
    assert scores["best by dev"] == trials[0]["test"]
    assert scores["cv among the top 3"] == out["exported_test"]  # what the search exported, retrained, is the trial's
    cv = out["cv"]
    rank = [t["number"] for t in trials]
    positions = [rank.index(c["trial"]) for c in cv]
    assert len(cv) == 3 and positions[0] == 0 and positions == sorted(positions)  # the top 3 distinct, in rank order
    by_number = {t["number"]: t["test"] for t in trials}
    for rule, k in selection.CV_RULES.items():  # the best cv mean among the first k candidates
        chosen = max(cv[:k], key=lambda c: (not c["one_answer"], c["mean"], c["search_dev"]))
        assert scores[rule] == by_number[chosen["trial"]]
    assert scores["best by test"] == max(t["test"] for t in trials)
    tied = out["members"]["tied averaged"]
    assert tied[0] == trials[0]["number"] and len(set(tied)) == len(tied)
    assert abs(scores["a random tied trial"] - sum(by_number[n] for n in tied) / len(tied)) < 1e-9
    assert len(out["members"]["top 3 averaged"]) == 3 and out["members"]["top 3 averaged"][0] == trials[0]["number"]


def test_the_table_has_a_row_per_rule_and_a_task_run_again_replaces_its_column():
    def column(task, value):
        searches = [{"seed": 0, "seconds": 2.0, "scores": {rule: value for rule in selection.RULES},
                     "members": {"tied averaged": [1, 2]}}]
        c = {"task": task, "searches": searches, "command": "c", "commit": "x", "date": "d"}
        return {**c, "summary": selection.summarise(c)}
    older = column("mr", 0.5)  # run before the cv rules: its searches have no score for them
    for search in older["searches"]:
        for rule in selection.CV_RULES:
            del search["scores"][rule]
    older["summary"] = selection.summarise(older)
    columns = selection.merged({"tasks": [older, column("cb", 0.25)]}, column("cb", 0.75))
    assert [c["task"] for c in columns] == ["cb", "mr"] and columns[0]["summary"]["best by dev"] == 0.75
    table = selection.markdown(columns)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == list(selection.RULES)
    assert rows[0].split(" | ")[1] == "75.0 (75.0)" and "cb 2/" not in table and "cb 2" in table
    cv_row = rows[list(selection.RULES).index("cv among the top 2")].split(" | ")
    assert cv_row[1:] == ["75.0 (75.0)", "– |"]  # cb's column has it, mr's predates it


@pytest.mark.parametrize("budget, steps", [("small", 40), ("small160", 160)])
def test_a_run_without_bf16_writes_its_own_file_with_every_task_it_ran(tmp_path, monkeypatch, budget, steps):
    """The searches are stood in for (what is tested here is where main() writes and with which budget, not what
    a search scores)."""
    import json
    from types import SimpleNamespace

    import common
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    readme = tmp_path / "README.md"  # the real benchmarks README must not take a stand-in's table
    name = f"selection-{budget}-fp32"
    readme.write_text("".join(f"<!-- results:{name}-cpu {end} -->\n" for end in ("start", "end")))
    monkeypatch.setattr(common, "README", readme)
    real_readme = common.REPO / "benchmarks" / "README.md"
    before = real_readme.read_text()
    monkeypatch.setattr(selection, "load_backbone", lambda *a, **k: SimpleNamespace(precision="fp32"))
    trained_steps = []

    def stand_in(task, data_dir, space, backbone, model, budget, seed):
        trained_steps.append(budget["steps"])
        return {"seed": seed, "seconds": 1.0, "members": {"tied averaged": [0]},
                "scores": {rule: 0.5 for rule in selection.RULES}}
    monkeypatch.setattr(selection, "select_on", stand_in)
    monkeypatch.setattr(sys, "argv", ["selection.py", "--tasks", "cb,rte", "--seeds", "0", "--precision", "fp32",
                                      "--budget", budget])
    selection.main()
    assert trained_steps == [steps, steps]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"{name}-cpu.json", f"{name}-cpu.md"]
    written = json.loads((tmp_path / "results" / f"{name}-cpu.json").read_text())
    assert written["benchmark"] == name and written["budget"] == budget
    assert "| rte | cb |" in readme.read_text() and real_readme.read_text() == before
    assert [c["task"] for c in written["tasks"]] == ["rte", "cb"] and written["precision"] == "fp32"


def test_a_task_run_seed_by_seed_keeps_its_other_seeds_and_says_which_run_searched_which():
    def search(seed, value):
        return {"seed": seed, "seconds": 10.0, "scores": {rule: value for rule in selection.RULES},
                "members": {"tied averaged": [0]}}

    def column(searches, command, commit):
        return {"task": "cb", "searches": searches, "command": command, "commit": commit, "date": "d"}
    first = selection.merged({}, column([search(0, 0.5), search(1, 0.7)], "first", "aaa"))
    grown = selection.merged({"tasks": first}, column([search(2, 0.9)], "second", "bbb"))
    assert [s["seed"] for s in grown[0]["searches"]] == [0, 1, 2]
    assert abs(grown[0]["summary"]["best by dev"] - 0.7) < 1e-9  # the mean over all three searches
    line = selection.markdown(grown).splitlines()[-1]
    assert "cb 30 s of search (seed 0, 1: `first`, commit aaa, d; seed 2: `second`, commit bbb, d)" in line
    again = selection.merged({"tasks": grown}, column([search(1, 0.1)], "third", "ccc"))  # seed 1 run again
    assert [(s["seed"], s["scores"]["best by dev"], s["commit"]) for s in again[0]["searches"]] == [
        (0, 0.5, "aaa"), (1, 0.1, "ccc"), (2, 0.9, "bbb")]
    one_run = selection.markdown(first).splitlines()[-1]
    assert "cb 20 s of search (`first`, commit aaa, d)" in one_run
