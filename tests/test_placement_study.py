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
