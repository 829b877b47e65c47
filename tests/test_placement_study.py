"""The placement study's fixed rows are the shipped space's reference plans, depth included, and its table puts the
searches last whichever column has them (columns measured before depth lack the depth rows)."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import placement_study  # noqa: E402

from autoplace.study.space import default_space_path, load_space  # noqa: E402


def test_the_fixed_rows_include_a_deep_and_a_late_prompt_on_the_shipped_space(tiny_gpt2):
    space = load_space(default_space_path("cb"))
    plans = placement_study.fixed_placements(space, tiny_gpt2)
    assert list(plans)[:3] == ["start-only", "deep (every layer)", "late (half depth)"]
    assert "@" not in plans["start-only"].template and plans["start-only"].lr == space.reference.lr
    deep, late = plans["deep (every layer)"], plans["late (half depth)"]
    assert deep.template == plans["start-only"].template.replace("]", "@all]", 1) and deep.lr == space.reference.lr_all
    assert (deep.encoder, plans["start-only"].encoder) == ("none", "lstm")  # each depth's recipe (depth_lr.py)
    n_layers = tiny_gpt2.n_layers
    layer = min(max(n_layers // 2, 1), n_layers - 1)
    assert f"@{layer}]" in late.template and late.lr == space.reference.lr_late and late.encoder == "lstm"
    assert late.template.replace(f"@{layer}", "") == plans["end-only"].template  # the end-only placement, deeper


def _column(task, rows):
    return {"task": task, "metric": "acc", "seconds": 1.0, "command": "c", "commit": "x", "date": "d",
            "search": {}, "rows": {row: {"test_mean": 0.5, "test_std": 0.0, "dev_mean": 0.5, "template": "t"}
                                   for row in rows}}


def test_the_table_lists_the_searches_last_and_marks_rows_a_column_lacks():
    old = _column("rte", ["zero-shot", "start-only", "search over words + places"])
    new = _column("cb", ["zero-shot", "start-only", "deep (every layer)", placement_study.SEARCH_ROW])
    table = placement_study.markdown([old, new], "small", [0])
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines() if line.startswith("| ")][2:]
    assert rows == ["zero-shot", "start-only", "deep (every layer)", "search over words + places",
                    placement_study.SEARCH_ROW]
    deep = next(line for line in table.splitlines() if line.startswith("| deep"))
    assert deep.split(" | ")[1] == "–" and deep.split(" | ")[2].startswith("50.0")


def test_rows_picks_rows_by_their_first_words_and_always_keeps_the_zero_shot_rows():
    names = ["zero-shot", "best screened words, zero-shot", "start-only", "late (half depth)",
             placement_study.SEARCH_ROW]
    assert [r for r in names if placement_study.wanted(r, None)] == names
    assert [r for r in names if placement_study.wanted(r, ["search", "late"])] == \
        ["zero-shot", "best screened words, zero-shot", "late (half depth)", placement_study.SEARCH_ROW]


def test_small160_is_small_with_four_times_the_steps():
    small, longer = placement_study.BUDGETS["small"], placement_study.BUDGETS["small160"]
    assert {k for k in small if small[k] != longer[k]} == {"steps", "eval_every"} and longer["steps"] == 160


def test_a_search_run_again_keeps_its_own_set_aside_row_and_drops_a_stale_one():
    def column(task, rows, searched=True):  # a column whose run did not search has no record of a search
        return {k: v for k, v in _column(task, rows).items() if searched or k != "search"}
    earlier = {"tasks": [column("cb", ["zero-shot", "start-only", placement_study.SET_ASIDE_ROW]),
                         column("mr", ["zero-shot", placement_study.SET_ASIDE_ROW])]}
    exported_its_own = column("cb", ["zero-shot", placement_study.SEARCH_ROW])  # this search exported its winner
    kept_manual = column("mr", ["zero-shot", placement_study.SEARCH_ROW, placement_study.SET_ASIDE_ROW])
    merged = {c["task"]: list(c["rows"]) for c in placement_study.merged_columns(earlier, [exported_its_own,
                                                                                        kept_manual])}
    assert merged == {"cb": ["zero-shot", "start-only", placement_study.SEARCH_ROW],
                      "mr": ["zero-shot", placement_study.SET_ASIDE_ROW, placement_study.SEARCH_ROW]}
    rows_only = column("cb", ["start-only"], searched=False)  # --rows without the search: nothing dropped
    again = placement_study.merged_columns(earlier, [rows_only])
    assert placement_study.SET_ASIDE_ROW in again[0]["rows"]


def test_the_set_aside_row_trains_the_winners_own_plan_depth_included(toy_task_file, tmp_path, tiny_gpt2):
    import optuna
    from test_depth import DEPTH_SPACE

    from autoplace.cli import main
    (tmp_path / "space.yaml").write_text(DEPTH_SPACE)
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(tmp_path / "space.yaml"), "--model",
                 "tiny-gpt2", "--out", str(out), "--n-trials", "6", "--pruner", "none"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    space = load_space(tmp_path / "space.yaml")
    late = next(t for t in study.trials if t.user_attrs.get("reference") == "late")
    plan = placement_study.set_aside_plan({"exported": "manual", "winner_trial": late.number}, study, space,
                                          tiny_gpt2)
    assert plan.template == late.user_attrs["template"] == "{sentence} [P:2@1] It was [P:2@1] [MASK]"
    assert plan.lr == late.params["lr@late"] and space.n_layers == 0  # the shipped space is left as it was
    assert placement_study.set_aside_plan({"exported": "winner", "winner_trial": late.number}, study, space,
                                          tiny_gpt2) is None
    assert placement_study.set_aside_plan({"exported": "manual", "winner_trial": None}, study, space, tiny_gpt2) \
        is None
