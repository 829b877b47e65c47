"""Choosing the winner: against the user's own template, and never a prompt that gives one answer to everything."""
import json

import optuna
import pytest
from optuna.distributions import FloatDistribution

from autoplace.cli import main
from autoplace.trainer import TrainResult


def _search(task, space, out, *extra):
    return main(["search", "--task", str(task), "--space", str(space), "--model", "tiny-gpt2", "--out", str(out),
                 "--n-trials", "3", "--pruner", "none", *extra])


def _always_wrong_winner(monkeypatch):
    """The search's winner, made to miss every dev example: a winner known to be worse than the manual template."""
    from autoplace.study import run as search_run
    real = search_run.choose_winner

    def choose(cfg, study, objective):
        run, meta = real(cfg, study, objective)
        honest = run.predictions

        def predictions(split):
            predicted, items = honest(split)
            return ([1 - item.label for item in items] if split == "dev" else predicted), items
        run.predictions = predictions
        return run, meta
    monkeypatch.setattr(search_run, "choose_winner", choose)


@pytest.mark.parametrize("keep_manual", [False, True], ids=["report", "keep-manual"])
def test_the_verdict_says_when_the_winner_is_worse_than_the_manual_template(monkeypatch, toy_task_file, space_file,
                                                                            tmp_path, capsys, keep_manual):
    _always_wrong_winner(monkeypatch)
    out = tmp_path / "s"
    assert _search(toy_task_file, space_file, out, *(["--keep-manual-unless-better"] if keep_manual else [])) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    verdict = summary["verdict"]
    assert verdict["winner"] == 0.0 and verdict["manual"] > 0 and verdict["word"] == "worse"
    assert verdict["difference"] == pytest.approx(-verdict["manual"]) and verdict["interval"][1] < 0
    report = (out / "report.md").read_text().splitlines()
    assert report[2].startswith("**Against your template: worse.**")  # the report's first lines
    assert "did not show that it beats the manual template" in report[2]
    best = json.loads((out / "best" / "template.json").read_text())
    manual = "{sentence} It was [MASK]"  # the toy task's own template
    assert (best["template"] == manual) == keep_manual and verdict["exported"] == ("manual" if keep_manual else "winner")
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    assert all(isinstance(t.user_attrs["one_answer"], bool) for t in study.trials)


def test_every_report_opens_with_the_verdict_and_its_word_follows_its_interval(toy_task_file, space_file, tmp_path,
                                                                               capsys):
    out = tmp_path / "s"
    assert _search(toy_task_file, space_file, out) == 0
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verdict"]
    lo, hi = verdict["interval"]
    assert lo <= verdict["difference"] <= hi
    assert verdict["word"] == ("better" if lo > 0 else "worse" if hi < 0 else "tied")
    assert (out / "report.md").read_text().splitlines()[2].startswith(f"**Against your template: {verdict['word']}.**")


def test_one_answer_prompts_rank_below_every_other_trial():
    from autoplace.study.trials import pick_trial, ranked_trials
    study = optuna.create_study(direction="maximize")
    for value, one_answer in ((0.9, True), (0.6, False), (0.7, False), (0.95, True)):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                                  value=value, user_attrs={"one_answer": one_answer}))
    assert [t.value for t in ranked_trials(study)] == [0.7, 0.6, 0.95, 0.9]
    assert pick_trial(study, None).value == 0.7  # export's default is the same winner


def test_a_prompt_is_one_answer_only_when_dev_has_several():
    result = TrainResult({"acc": 0.5}, 0, 0, 0.0, predictions=[1, 1, 1], gold_answers=2)
    assert result.one_answer
    assert not TrainResult({"acc": 1.0}, 0, 0, 0.0, predictions=[1, 1, 1], gold_answers=1).one_answer
    assert not TrainResult({"acc": 0.6}, 0, 0, 0.0, predictions=[1, 0, 1], gold_answers=2).one_answer
