"""benchmarks/screen_precision.py reports where two screens of one task part: first candidate, kept overlap, moved
scores and the first two's gap, computed from the screens' records (nothing here runs a model)."""
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import screen_precision  # noqa: E402


def _screen(scores: dict[str, float], keep: int) -> dict:
    kept = sorted(scores, key=lambda k: -scores[k])[:keep]
    return {"seconds": 1.0, "examples": {"train": 32, "dev": 32}, "metric": "accuracy", "kept": kept,
            "scores": {k: {"both": v, "train": v, "dev": v} for k, v in scores.items()}}


def test_a_flipped_near_tie_changes_the_first_and_is_counted():
    low = _screen({"t0.v0.raw": 0.625, "t0.v0.cf": 0.609375, "t1.v0.raw": 0.5, "t1.v0.cf": 0.4}, keep=2)
    full = _screen({"t0.v0.raw": 0.609375, "t0.v0.cf": 0.640625, "t1.v0.raw": 0.5, "t1.v0.cf": 0.4}, keep=2)
    c = screen_precision.compare({"bf16": low, "fp32": full})
    assert c["first"] == {"bf16": "t0.v0.raw", "fp32": "t0.v0.cf"} and not c["first_agrees"]
    assert c["kept_both"] == 2 and c["keep"] == 2 and c["candidates"] == 4
    assert c["moved"] == 2 and c["max_moved"] == pytest.approx(0.03125)  # two examples of 64
    assert c["bf16_gap"] == pytest.approx(0.015625)  # one example
    row = screen_precision.table([{"task": "wic", "bf16": low, "fp32": full, "compare": c}])
    assert "| wic | 64 | 4 | t0.v0.raw (62.5) | t0.v0.cf (64.1) | **no** | 2 of 2 | 2 | 3.1 | 1.6 |" in row
    assert row.endswith("differs by precision on 1 of 1 tasks (wic).")


def test_identical_screens_agree_everywhere():
    same = _screen({"t0.v0.raw": 0.7, "t1.v0.raw": 0.6, "t2.v0.raw": 0.5}, keep=2)
    c = screen_precision.compare({"bf16": same, "fp32": same})
    assert c["first_agrees"] and c["kept_both"] == 2 and c["moved"] == 0 and c["max_moved"] == 0.0
    assert screen_precision.table([{"task": "cb", "bf16": same, "fp32": same, "compare": c}]).endswith(
        "on 0 of 1 tasks.")
