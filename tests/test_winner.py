"""Choosing the winner: against the user's own template, and never a prompt that gives one answer to everything."""
import json

import optuna
import pytest
from optuna.distributions import FloatDistribution

from autoplace.cli import main
from autoplace.tasks import get_task
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
    assert ((best["template"] == manual) == keep_manual
            and verdict["exported"] == ("manual" if keep_manual else "winner"))
    # the winner is named, exported or not, so a kept manual template still says what the search found
    assert f"The winner (`{verdict['winner_template']}`)" in report[2]
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    assert all(isinstance(t.user_attrs["one_answer"], bool) for t in study.trials)
    assert study.trials[verdict["winner_trial"]].user_attrs["template"] == verdict["winner_template"]


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


def test_bootstrap_interval_and_ties_as_computed_by_hand(toy_task_file):
    from types import SimpleNamespace
    from autoplace.study.winner import bootstrap_scores, percentile_interval, tied_with
    task = get_task(str(toy_task_file))
    items = [SimpleNamespace(label=i % 2, group=None) for i in range(32)]
    right = [it.label for it in items]
    assert percentile_interval(bootstrap_scores(task, items[:20], right[:20])[:, 0]) == (1.0, 1.0)
    half = [it.label if i % 2 == 0 else 1 - it.label for i, it in enumerate(items)]  # every other one wrong
    lo, hi = percentile_interval(bootstrap_scores(task, items, half)[:, 0])
    assert 0.33 < lo < 0.45 and 0.55 < hi < 0.67  # ±1.645 standard errors of 0.5 over 32 examples is ±0.145
    paired = bootstrap_scores(task, items, right, half)
    assert (paired[:, 0] == 1.0).all() and percentile_interval(paired[:, 0] - paired[:, 1])[0] > 0.3
    trials = [SimpleNamespace(number=n, value=v) for n, v in enumerate([0.5, 0.4, 0.62, 0.7, None])]
    assert [t.number for t in tied_with((lo, hi), trials, winner_number=0)] == [1, 2]


def test_a_question_drawn_twice_counts_twice_for_exact_match():
    """MultiRC: questions are resampled whole, and each draw is its own question: q1 (right) drawn twice beside q3
    (wrong) is exact match 2/3, not the 1/2 of q1's copies merged into one question."""
    import numpy as np
    from autoplace.featurize import Encoded
    from autoplace.study.winner import bootstrap_scores
    task = get_task("multirc")
    true, false = task.labels.index("true"), task.labels.index("false")
    items = [Encoded([], [], 0, label, [], group=q) for q in ("q1", "q2", "q3") for label in (true, false)]
    predicted = [true, false, true, false, true, true]  # q1 and q2 right, q3 wrong
    scores = bootstrap_scores(task, items, predicted, resamples=50, seed=3)[:, 0]
    rng = np.random.default_rng(3)
    for score in scores:
        draw = rng.integers(0, 3, 3)
        em = np.mean([q != 2 for q in draw])  # each drawn question counts once per draw
        rows = [2 * q + i for q in draw for i in (0, 1)]
        f1a = task.score([predicted[r] for r in rows], [items[r] for r in rows])["f1a"]  # f1a ignores groups
        assert score == pytest.approx((f1a + em) / 2)


def test_folds_partition_train_and_dev_and_never_hold_test(toy_task_file):
    from autoplace.study.winner import fold_tasks
    task = get_task(str(toy_task_file))
    folds = fold_tasks(task, None, 4, seed=0)
    held = [fold.load_split("dev") for fold in folds]
    assert sorted(len(h) for h in held) == [12, 12, 12, 12]  # 32 train + 16 dev
    for fold, h in zip(folds, held):
        assert len(fold.load_split("train")) == 48 - len(h)
        assert sorted(fold.source.train_rows + fold.source.held_rows) == list(range(48))
        with pytest.raises(Exception, match="never reads the test split"):
            fold.source.load("test", None)
    assert sorted(r for fold in folds for r in fold.source.held_rows) == list(range(48))


def test_select_cv_picks_the_best_mean_over_folds_not_the_best_dev(monkeypatch, toy_task_file, tmp_path, capsys):
    """Fold scores set by hand: the second-best trial on dev has the best mean over folds, so it must win."""
    from autoplace.study import winner
    real_retrain, calls = winner.retrain, []
    space = tmp_path / "space.yaml"
    space.write_text('skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"\n'
                     "slots: {min: 1, max: 1}\nlength: {min: 2, max: 2}\nencoder: [none]\n"
                     "lr: {low: 1.0e-2, high: 5.0e-2, log: true}\n"
                     "budget: {steps: 4, eval_every: 2, batch_size: 8, max_length: 32}\n"
                     "reference: {total_length: 2, lr: 0.05, encoder: none, init: vocab}\n")
    order = {}

    def fake_fold_scores(cfg, objective, trial, seed, task=None, budget=None):
        if task is None:  # the winner's final training: real, on train, with dev choosing its checkpoint
            calls.append(("final", trial.number))
            return real_retrain(cfg, objective, trial, seed, task, budget)
        calls.append(("fold", trial.number, len(task.load_split("dev")), budget.eval_every))
        rank = order.setdefault(trial.number, len(order))  # candidates come best-dev first
        return None, None, [0.5, 0.9, 0.1][rank], False

    monkeypatch.setattr(winner, "retrain", fake_fold_scores)
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(space), "--model", "tiny-gpt2",
                 "--n-trials", "5", "--pruner", "none", "--select", "cv", "--confirm-top", "2", "--folds", "3",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    folds = [c for c in calls if c[0] == "fold"]
    assert len(folds) == 6 and {c[2] for c in folds} == {16} and {c[3] for c in folds} == {4}  # 48 / 3; last step
    second = [n for n, rank in order.items() if rank == 1][0]
    assert calls[-1] == ("final", second)
    assert json.loads((out / "best" / "template.json").read_text())["trial"] == second
    assert "## Cross-validation (3 folds of train and dev)" in (out / "report.md").read_text()
    lo, hi = summary["dev_interval"]
    assert lo <= summary["dev"]["acc"] <= hi
