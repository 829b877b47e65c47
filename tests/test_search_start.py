"""A search's first minutes: everything it will read is checked before the study exists, the screen scores at the
run's budget, a trial names its words, a Ctrl-C says where it stopped, and a reused artifact trains as it was
trained."""
import json

import optuna
import pytest

from autoplace.cli import main
from autoplace.study.worker import Interrupted, phase

WORDS_SPACE = """
templates:
  - "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"
verbalizers:
  - {pos: " great", neg: " terrible"}
  - {pos: " good", neg: " bad"}
calibrate: [none, content_free]
screen: {keep: 4, examples: 64}
slots: {min: 1, max: 2}
length: {min: 2, max: 3}
encoder: [none]
lr: {low: 1.0e-2, high: 5.0e-2, log: true}
budget: {steps: 4, eval_every: 2, batch_size: 8, max_length: 96}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab}
"""


def _search(task, space, out, *extra):
    return main(["search", "--task", str(task), "--space", str(space), "--model", "tiny-gpt2", "--out", str(out),
                 "--pruner", "none", *extra])


def test_a_missing_test_split_fails_before_the_study_exists(toy_task_file, space_file, tmp_path, capsys):
    """The test split is read only for the winner, but a missing file is found in seconds, and nothing is left."""
    text = toy_task_file.read_text()
    missing = toy_task_file.with_name("broken.yaml")
    missing.write_text(text.replace("test.jsonl", "nowhere.jsonl"))
    assert "nowhere.jsonl" in missing.read_text()
    out = tmp_path / "s"
    assert _search(missing, space_file, out, "--n-trials", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.jsonl" in err
    assert not out.exists()  # no half-made study to trip over on the next run


def test_the_screen_scores_at_the_runs_max_length_as_its_zero_shot_trials_do(toy_task_file, tmp_path, capsys,
                                                                             monkeypatch):
    """--max-length 6 (the space says 96): the screen must read its inputs at 6 tokens, as the trials do, so a
    candidate's screen dev score equals the dev score of the zero-shot trial with the same words. A trial names its
    words everywhere."""
    from autoplace.featurize import Featurizer
    from autoplace.study import screen
    lengths, real = [], Featurizer.__init__

    def spy(self, template, task, backbone, max_length=256):
        lengths.append(max_length)
        real(self, template, task, backbone, max_length)
    monkeypatch.setattr(screen, "Featurizer", type("Spied", (Featurizer,), {"__init__": spy}))
    space = tmp_path / "space.yaml"
    space.write_text(WORDS_SPACE)
    out = tmp_path / "s"
    assert _search(toy_task_file, space, out, "--n-trials", "16", "--max-length", "6") == 0
    assert lengths and set(lengths) == {6}
    err = capsys.readouterr().err
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    rows = {r["key"]: r for r in study.user_attrs["screen"]["rows"]}
    zero_shot = [t for t in study.trials if t.user_attrs.get("reference") == "zero-shot"]
    assert len(zero_shot) == 4
    for trial in zero_shot:
        assert trial.value == pytest.approx(rows[trial.params["words"]]["dev"])
    calibrated = next(t for t in zero_shot if t.user_attrs["calibrate"])
    words = calibrated.user_attrs["words"]
    assert words.endswith(", cf") and words.split(",")[0] in ("great/terrible", "good/bad")
    assert f"[{words}]" in err  # the trial's line
    assert "zero-shot screen: 1 phrasing(s)" in err and "zero-shot screen: phrasing 1 of 1 scored" in err
    report = (out / "report.md").read_text()
    assert "| words |" in report and f"| {words} |" in report


def test_a_ctrl_c_says_which_phase_it_stopped_in(capsys):
    with pytest.raises(Interrupted, match="while setting up the study"):
        with phase("setting up the study"):
            raise KeyboardInterrupt
    with pytest.raises(Interrupted, match="trial 3 was marked failed"):  # a trial's own word is kept
        with phase("between two trials"):
            raise Interrupted("SIGINT", "interrupted (SIGINT): trial 3 was marked failed and queued again")


def test_a_ctrl_c_is_never_an_empty_message(monkeypatch, capsys):
    from autoplace import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_tasks", interrupted)
    assert main(["tasks"]) == 130
    assert capsys.readouterr().err.strip() == "autoplace: interrupted"


def test_train_from_an_artifact_takes_its_task_and_settings_unless_a_flag_says_otherwise(toy_task_file, tmp_path,
                                                                                        capsys):
    first = tmp_path / "first"
    assert main(["train", "--task", str(toy_task_file), "--template", "[P:2] {sentence} It was [MASK]", "--model",
                 "tiny-gpt2", "--steps", "2", "--max-length", "40", "--lr", "0.02", "--batch-size", "4",
                 "--encoder", "mlp", "--out", str(first)]) == 0
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["train", "--template", str(first), "--steps", "2", "--lr", "0.01", "--out", str(again)]) == 0
    captured = capsys.readouterr()
    meta = json.loads((again / "template.json").read_text())
    assert meta["prompt"]["max_length"] == 40 and meta["prompt"]["encoder"] == "mlp"
    assert meta["train"]["batch_size"] == 4 and meta["train"]["lr"] == 0.01  # the flag wins
    assert meta["task"] == json.loads((first / "template.json").read_text())["task"]
    said = [line for line in captured.err.splitlines() if "a flag overrides" in line]
    assert len(said) == 1 and "max_length 40" in said[0] and "batch_size 4" in said[0] and "lr" not in said[0]
    assert "acc" in json.loads(captured.out)["dev"]


def test_train_without_a_task_or_an_artifact_is_one_line(tmp_path, capsys):
    assert main(["train", "--template", "{sentence} [MASK]", "--out", str(tmp_path / "a")]) == 2
    assert "train needs --task" in capsys.readouterr().err


def test_export_prints_dev_as_train_does(toy_task_file, space_file, tmp_path, capsys):
    out = tmp_path / "s"
    assert _search(toy_task_file, space_file, out, "--n-trials", "2") == 0
    capsys.readouterr()
    assert main(["export", str(out), "--out", str(tmp_path / "x")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["dev"], dict) and "acc" in printed["dev"]


def _stop_at(phase_name, monkeypatch):
    """Make the search raise Ctrl-C once, in the named phase; returns a list that says whether it fired."""
    from autoplace.study import progress, screen, winner, worker
    owner, name = {"before the study": (worker.Objective, "__init__"),
                   "during the screen": (screen, "screen"),  # the study exists; its set-up is unfinished
                   "between trials": (progress.Progress, "trial_done"),
                   "during the winner's retraining": (winner, "retrain")}[phase_name]
    real, fired = getattr(owner, name), []

    def stop(*args, **kwargs):
        if fired:
            return real(*args, **kwargs)
        fired.append(True)
        if phase_name == "between trials":  # the first trial is done and told
            real(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(owner, name, stop)
    return fired


PHASES = ["before the study", "during the screen", "between trials", "during the winner's retraining"]
SAID = {"before the study": "while loading the backbone", "during the screen": "while setting up or joining the study",
        "between trials": "while between two trials", "during the winner's retraining": "while choosing, testing"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("where", PHASES)
def test_a_search_stopped_in_any_phase_resumes_with_exactly_n_trials(request, backend, where, toy_task_file, tmp_path,
                                                                    capsys, monkeypatch):
    """Ctrl-C at each phase: one line naming the phase, exit 130; the same command again finishes at once (no wait
    for a creator that is gone) with exactly N trials and a winner exported."""
    import time
    import uuid
    space = tmp_path / "space.yaml"
    space.write_text(WORDS_SPACE)
    out = tmp_path / "s"
    storage = (request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{out}/study.db")
    args = ["--n-trials", "5", "--confirm-top", "1", "--confirm-seeds", "1", "--storage", storage,
            "--study-name", f"phases-{uuid.uuid4().hex[:8]}"]
    fired = _stop_at(where, monkeypatch)
    assert _search(toy_task_file, space, out, *args) == 130 and fired
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith("autoplace: interrupted") and SAID[where] in said[-1], said[-1]
    monkeypatch.undo()
    started = time.time()
    assert _search(toy_task_file, space, out, *args) == 0
    assert time.time() - started < 120
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["done"] == "5 of 5" and (out / "best" / "template.json").is_file()
    study = optuna.load_study(storage=storage, study_name=args[-1])
    assert sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials) == 5


def test_a_search_never_goes_quiet_for_long(monkeypatch, capsys):
    """Whenever QUIET_SECONDS pass without a line, the ticker says what the search is doing."""
    import time
    from autoplace.errors import say
    from autoplace.study import progress
    monkeypatch.setattr(progress, "QUIET_SECONDS", 1.0)
    with progress.TICKER.running(True):
        with progress.TICKER.doing("training trial 7"):
            time.sleep(2.6)
            say("trial 7 complete")
            time.sleep(0.5)  # a line was just said: nothing more yet
    err = capsys.readouterr().err.splitlines()
    stills = [line for line in err if line.startswith("autoplace: still training trial 7")]
    assert 1 <= len(stills) <= 2 and err[-1] == "autoplace: trial 7 complete"
    with progress.TICKER.running(False), progress.TICKER.doing("x"):  # --quiet: no ticker
        time.sleep(1.5)
    assert capsys.readouterr().err == ""


def test_the_tickers_lines_25_s_apart_never_read_the_same():
    """Minutes alone made 100 s and 125 s both "2 min"; up to 10 minutes the seconds are said too."""
    from autoplace.study.progress import QUIET_SECONDS, _duration
    said = [_duration(QUIET_SECONDS * k) for k in range(1, int(600 / QUIET_SECONDS))]
    assert len(set(said)) == len(said) and said[:4] == ["25 s", "50 s", "75 s", "1 min 40 s"]
    assert _duration(119.6) == "2 min 00 s" and _duration(3600) == "60 min"


def test_the_eta_counts_a_trained_trial_not_the_quick_zero_shot_ones():
    """After two 1 s zero-shot references and one 100 s trained trial, the trials left take 100 s each."""
    from autoplace.study.progress import Progress
    progress = object.__new__(Progress)
    progress.seconds = {"trained": [], "zero-shot": [1.0, 1.0]}
    assert progress.per_trial() == 1.0  # nothing trained yet: the best guess there is
    progress.seconds["trained"].append(100.0)
    assert progress.per_trial() == 100.0


def test_search_help_names_every_built_in_task(capsys):
    from autoplace.tasks import task_names
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in task_names())


def test_the_curves_plot_shows_trained_trials_only():
    """A zero-shot trial's dev curve is flat (nothing learns): the curves plot leaves it out, and with nothing
    trained there is no plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.distributions import FloatDistribution
    from autoplace.study.report import _curves
    study = optuna.create_study(direction="maximize")

    def add(value, tokens):
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=value,
            intermediate_values={5: value, 10: value}, user_attrs={"n_prompt_tokens": tokens, "template": "t"}))
    add(0.9, 0)
    fig, ax = plt.subplots()
    assert _curves(study, ax, "dev acc") is False
    add(0.6, 4)
    assert _curves(study, ax, "dev acc") is not False and len(ax.lines) == 1
    plt.close("all")
