import dataclasses
import json

import optuna
import pytest
from optuna.trial import TrialState

from autoplace.cli import main
from autoplace.study.space import load_space
from autoplace.tasks import get_task
from autoplace.study.opening import make_pruner
from autoplace.study.worker import keep_going
from conftest import REPO

def search(task, space, out, *extra, model="tiny-gpt2"):
    return main(["search", "--task", str(task), "--space", str(space), "--model", model, "--out", str(out), *extra])


def study_of(out, name="autoplace-toy"):
    return optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name=name)


def test_search_runs_n_trials_and_writes_best_and_report(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "7", "--confirm-top", "2", "--confirm-seeds", "2") == 0
    summary = json.loads(capsys.readouterr().out)
    study = study_of(out)
    trials = study.get_trials()
    assert len(trials) == 7 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # the reference points come first, in the same parameters TPE samples
    refs = [t.user_attrs.get("reference") for t in trials[:4]]
    assert refs == ["zero-shot", "start-only", "end-only", "mixed"]
    assert [t.user_attrs["placement"] for t in trials[:4]] == ["none", "start-only", "end-only", "mixed"]
    assert trials[1].user_attrs["template"] == "[P:4] {sentence} It was [MASK]"
    assert all(t.user_attrs["n_prompt_tokens"] == 4 for t in trials[1:4])
    for t in trials:
        assert "template" in t.user_attrs and "placement" in t.user_attrs
    assert all(t.intermediate_values for t in trials[1:])  # every trained trial reported its dev scores
    # the zero-shot reference trains nothing; its score is reported flat at every dev step, for pruners to compare
    assert trials[0].intermediate_values == {step: trials[0].value for step in (5, 10, 15, 20)}
    best = json.loads((out / "best" / "template.json").read_text())
    assert best["test"] is not None and best["confirm"]["seeds"] == 2
    assert best["template"] == summary["template"]
    report = (out / "report.md").read_text()
    for section in ("## Top templates", "## Position effect", "| start-only |", "| end-only |", "| mixed |",
                    "## Parameter importances", "## Confirmation over seeds", "total train steps", "pruned"):
        assert section in report, section
    for plot in ("history", "curves", "score_vs_cost"):
        assert (out / f"{plot}.png").stat().st_size > 1000
    assert (out / "trials.csv").read_text().count("\n") == 8
    restarted = [t.number for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["restarts"]]
    assert (f"{len(restarted)} completed trial(s) gave one answer to every dev example and were trained again"
            in report) == bool(restarted)


@pytest.mark.parametrize("pruner", ["median", "wilcoxon"])
def test_a_hopeless_trial_is_pruned(monkeypatch, capsys, caplog, toy_task_file, space_file, tmp_path, pruner):
    """The references train normally; every sampled trial scores 0 on dev at each evaluation, so it falls below the
    median of the trials before it at the same step (median), or its dev curve lies below the best trial's step by
    step (wilcoxon), and it is stopped before its last step."""
    from autoplace.study import worker
    real_fit, fits = worker.fit, []

    def hopeless_after_the_references(run, cfg, callback=None, progress=None):
        fits.append(run.prompt.template)
        if len(fits) > 4:  # the space's 4 references come first
            return real_fit(run, cfg, lambda step, score: callback(step, 0.0), progress)
        return real_fit(run, cfg, callback, progress)

    monkeypatch.setattr(worker, "fit", hopeless_after_the_references)
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "8", "--steps", "30", "--pruner", pruner) == 0
    assert "rarely prune" not in caplog.text
    trials = study_of(out).get_trials()
    # the median pruner waits for 5 finished trials: the 4 references and the first sampled one
    sampled = [t for t in trials if "reference" not in t.user_attrs][1:]
    assert len(sampled) == 3 and all(t.state == TrialState.PRUNED for t in sampled), [
        (t.state, t.intermediate_values) for t in trials]
    assert all(t.user_attrs["steps"] < 30 and t.user_attrs["reason"].startswith("pruned at step") for t in sampled)
    assert all(t.state == TrialState.COMPLETE for t in trials if "reference" in t.user_attrs)


def test_rerun_resumes_and_loses_nothing(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "5") == 0
    first = {t.number: (t.state, t.value, t.user_attrs.get("autoplace_artifact")) for t in study_of(out).trials}
    assert search(toy_task_file, space_file, out, "--n-trials", "5") == 0  # same command: nothing new to do
    assert len(study_of(out).trials) == 5
    assert search(toy_task_file, space_file, out, "--n-trials", "7") == 0  # a larger budget continues the study
    trials = study_of(out).trials
    assert len(trials) == 7
    assert {t.number: (t.state, t.value, t.user_attrs.get("autoplace_artifact")) for t in trials[:5]} == first


def test_two_workers_share_one_journal_storage(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    storage = f"journal:///{tmp_path}/study.log"
    assert search(toy_task_file, space_file, out, "--n-trials", "6", "--workers", "2", "--storage", storage) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(w["worker"] for w in summary["workers"]) == [0, 1]
    assert sum(w["complete"] + w["pruned"] for w in summary["workers"]) == 6
    study = optuna.load_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(f"{tmp_path}/study.log")), study_name="autoplace-toy")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def test_every_worker_runs_the_task_it_was_given(toy_task_file, space_file, tmp_path):
    """An in-process caller (a benchmark on a subset) passes its own Task: with 2 workers, every trial and the
    winner must use it, not the task its name resolves to."""
    import dataclasses
    from autoplace.study.run import search as run_search
    from autoplace.study.storage import default_url
    from autoplace.config import SearchConfig
    given = dataclasses.replace(get_task(str(toy_task_file)), name="the-given-task")
    out = tmp_path / "s"
    cfg = SearchConfig(task=str(toy_task_file), space=str(space_file), out=str(out), storage=default_url(out),
                       study_name="given", model="tiny-gpt2", n_trials=4, workers=2, progress=False)
    summary = run_search(cfg, given)
    assert sum(w["complete"] + w["pruned"] for w in summary["workers"]) == 4
    study = optuna.load_study(storage=default_url(out), study_name="given")
    stored = [json.loads((out / "artifacts" / t.user_attrs["autoplace_artifact"]["ids"]["template.json"]).read_text())
              for t in study.trials if t.state == TrialState.COMPLETE]
    assert stored and {meta["task"] for meta in stored} == {"the-given-task"}
    assert json.loads((out / "best" / "template.json").read_text())["task"] == "the-given-task"


def test_export_then_train_from_it_then_eval(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "5") == 0
    capsys.readouterr()
    storage = f"sqlite:///{out}/study.db"
    assert main(["export", "--storage", storage, "--study-name", "autoplace-toy", "--out", str(tmp_path / "e"),
                 "--trial", "2"]) == 0
    exported = json.loads(capsys.readouterr().out)
    meta = json.loads((tmp_path / "e" / "template.json").read_text())
    assert exported["trial"] == 2 and meta["trial"] == 2 and meta["test"] is None  # never scored on test in a trial
    assert meta["template"] == study_of(out).trials[2].user_attrs["template"]
    assert main(["eval", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(study_of(out).trials[2].value)
    assert main(["train", "--task", str(toy_task_file), "--template", str(tmp_path / "e"), "--steps", "5",
                 "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "template.json").read_text())["template"] == meta["template"]
    assert main(["export", "--storage", storage, "--study-name", "autoplace-toy", "--out", str(tmp_path / "p"),
                 "--trial", "1", "--format", "peft"]) == 0  # trial 1 is the start-only reference: a prefix
    assert (tmp_path / "p" / "adapter_config.json").is_file()
    assert main(["export", "--storage", storage, "--study-name", "autoplace-toy", "--out", str(tmp_path / "q"),
                 "--trial", "3", "--format", "peft"]) == 2  # end-only: PEFT can only prepend
    assert "PEFT" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_test_split_is_read_only_after_the_search(monkeypatch, capsys, toy_task_file, space_file, tmp_path):
    from autoplace.study import run as search_run
    from autoplace.tasks.base import Task
    events = []
    original_load, original_choose = Task.load_split, search_run.choose_winner

    def spy_load(self, split, data_dir=None):
        events.append(split)
        return original_load(self, split, data_dir)

    def spy_choose(cfg, study, objective):
        events.append(("choose", len(study.trials), all(t.state.is_finished() for t in study.trials)))
        return original_choose(cfg, study, objective)

    monkeypatch.setattr(Task, "load_split", spy_load)
    monkeypatch.setattr(search_run, "choose_winner", spy_choose)
    assert search(toy_task_file, space_file, tmp_path / "s", "--n-trials", "5", "--confirm-top", "1",
                  "--confirm-seeds", "1") == 0
    choose_at = next(i for i, e in enumerate(events) if isinstance(e, tuple))
    assert events[choose_at] == ("choose", 5, True)
    assert "test" not in events[:choose_at] and events.count("test") == 1
    assert events.index("test") > choose_at


@pytest.mark.parametrize("confirm_top", ["0", "1"])
def test_the_winner_is_tested_on_the_backbone_and_precision_its_trials_ran_on(monkeypatch, capsys, toy_task_file,
                                                                             space_file, tmp_path, confirm_top):
    from autoplace.runner import PromptRun
    scored, original = [], PromptRun.evaluate

    def spy(self, split, batch_size=32):
        scored.append((split, self.backbone.precision))
        return original(self, split, batch_size)

    monkeypatch.setattr(PromptRun, "evaluate", spy)
    assert search(toy_task_file, space_file, tmp_path / "s", "--n-trials", "2", "--steps", "4", "--eval-every", "2",
                  "--precision", "bf16", "--confirm-top", confirm_top, "--confirm-seeds", "1") == 0
    assert scored == [("test", "bf16")]


@pytest.mark.parametrize("body, needle", [
    ("skeleton: 5\n", "key 'skeleton' must be template text with <place> markers"),
    ("slots: {min: 1, max: 2}\n", "key 'templates' or 'skeleton' is required"),
    ('skeleton: "{sentence} [MASK]"\n', "has no <place> markers"),
    ('skeleton: "<a> {sentence} [MASK]"\nlength: {min: 2, max: 99}\n', "key 'length' must stay within 1-64"),
    ('skeleton: "<a> {sentence} [MASK]"\nencoder: [gru]\n', "key 'encoder' must be a non-empty list"),
    ('skeleton: "<a> {sentence} [MASK]"\nbudget: {steps: -3}\n', "key 'budget.steps' must be positive"),
    ('skeleton: "<a> {sentence} [MASK]"\nbudget: {stepz: 3}\n', "key 'budget.stepz' is not a known key"),
    ('skeleton: "<a> {sentence} [MASK]"\nbudget: {eval_examples: -1}\n',
     "key 'budget.eval_examples' must be 0 or more"),
    ('skeleton: "<a> {sentence} [MASK]"\nbudget: {restarts: -1}\n', "key 'budget.restarts' must be 0 or more"),
    ('skeleton: "<a> {sentence} [MASK]"\nslots: 3\n', "key 'slots' must be a mapping with min and max"),
    ('skeleton: "<a> {sentence [MASK]"\n', "key 'skeleton' is not a valid template"),
    ("skeleton: [unclosed\n", "not valid YAML"),
])
def test_bad_space_yaml_gives_one_line(capsys, toy_task_file, tmp_path, body, needle):
    (tmp_path / "bad.yaml").write_text(body)
    assert search(toy_task_file, tmp_path / "bad.yaml", tmp_path / "s") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "bad.yaml" in err[0], err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("url, needle", [
    ("notaurl", "not a storage URL"),
    ("redis://localhost/0", "not a storage URL"),
    ("postgresql://bob:hunter2@127.0.0.1:1/none", "cannot be opened"),
    ("journal:", "needs a file path"),
])
def test_bad_storage_url_gives_one_line_without_password(capsys, toy_task_file, space_file, tmp_path, url, needle):
    assert search(toy_task_file, space_file, tmp_path / "s", "--storage", url) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "hunter2" not in err[0], err


def test_shipped_spaces_load_and_build_references():
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        space = load_space(path)
        assert space.depths == ["input", "all", "late"], path  # every shipped space searches depth
        space.n_layers = 30
        names = [name for name, _ in space.references(causal=True)]
        assert names[:4] == ["zero-shot", "start-only", "deep", "late"] and "end-only" in names, path
    nli = load_space(REPO / "search_spaces" / "nli.yaml")
    nli.n_layers = 30
    refs = dict(nli.references(causal=True))
    assert set(refs) == {"zero-shot", "start-only", "deep", "late", "middle-only", "end-only", "mixed"}
    assert refs["deep"]["depth"] == "all" and refs["late"]["late_layer"] == 15 and "lr@late" in refs["late"]
    assert (refs["deep"]["encoder"], refs["late"]["encoder"]) == ("none", "lstm")
    first = nli.skeletons[0]
    assert first.usable_places(causal=False)[-1] == "end" and "end" not in first.usable_places(causal=True)
    assert nli.render({"start": 2, "after:premise": 3}) == \
        "[P:2] {premise} [P:3] Question: {hypothesis}? Answer: [MASK]"
    assert nli.skeletons[1].render({"before:answer": 2}) == \
        '{premise}\nQuestion: Is it true that "{hypothesis}"? [P:2]\nAnswer: [MASK]'  # no stray spaces at newlines


def test_shipped_spaces_offer_phrasings_words_and_calibration_that_fit_their_tasks():
    for name, family in (("rte", "nli"), ("cb", "cb"), ("boolq", "boolq"), ("mr", "sentiment")):
        space = load_space(REPO / "search_spaces" / f"{family}.yaml")
        space.check(get_task(name))
        assert len(space.skeletons) >= 4 and len(space.verbalizers) >= 3 and space.needs_screen()
        assert space.calibrations == ("none", "content_free")
        assert space.verbalizers[0] == get_task(name).verbalizer  # the manual default comes first
        assert space.manual_template == get_task(name).template


def test_budget_flags_override_the_space(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "2", "--steps", "4", "--eval-every", "2",
                  "--max-length", "24", "--precision", "bf16") == 0
    best = json.loads((out / "best" / "template.json").read_text())
    assert (best["precision"] == "bf16" and best["prompt"]["max_length"] == 24 and best["train"]["steps"] == 4
            and best["train"]["eval_every"] == 2)
    assert all(t.user_attrs["steps"] in (0, 4) for t in study_of(out).get_trials())


class AlwaysPrune:
    asked = 0

    def should_prune(self) -> bool:
        self.asked += 1
        return True


def test_a_trial_is_never_pruned_at_its_last_step_nor_a_reference_but_the_pruner_is_always_asked():
    trial = AlwaysPrune()
    assert keep_going(trial, 10, 30, is_reference=False) is False
    assert keep_going(trial, 30, 30, is_reference=False) is True  # fully trained: pruning saves nothing
    assert keep_going(trial, 10, 30, is_reference=True) is True
    assert trial.asked == 3  # hyperband/SHA record a score only when asked


@pytest.mark.parametrize("steps, eval_every, warns", [(12, 3, True), (20, 4, False)])
def test_wilcoxon_warns_when_the_budget_gives_it_too_few_evaluations(caplog, steps, eval_every, warns):
    make_pruner("wilcoxon", steps, eval_every)
    assert ("wilcoxon will rarely prune with 4 dev evaluations" in caplog.text) is warns


def test_export_and_report_take_the_search_folder_that_search_names(capsys, toy_task_file, space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "4") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["study_name"] == "autoplace-toy" and summary["storage"] == f"sqlite:///{out.resolve()}/study.db"
    assert main(["export", str(out), "--trial", "1", "--out", str(tmp_path / "t1")]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 1
    assert json.loads((tmp_path / "t1" / "template.json").read_text())["trial"] == 1
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    assert main(["export", str(tmp_path / "t1"), "--out", str(tmp_path / "t2")]) == 2
    assert "holds no study (no study.db)" in capsys.readouterr().err


def test_a_small_search_says_which_references_it_dropped_and_why_importances_are_absent(capsys, toy_task_file,
                                                                                       space_file, tmp_path):
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "3") == 0
    err = capsys.readouterr().err
    assert "--n-trials 3 leaves no room for 1 of the 4 reference trials (mixed) nor for any sampled trial" in err
    assert "UserWarning" not in err and "Objective Value" not in err
    study = study_of(out)
    assert study.user_attrs["dropped_references"] == ["mixed"]
    report = (out / "report.md").read_text()
    assert "Not shown: 3 completed trials; importances need 4 or more." in report
    assert not (out / "importances.png").exists() and (out / "history.png").is_file()


def test_importances_cover_only_the_parameters_that_varied(capsys, toy_task_file, space_file, tmp_path):
    from autoplace.study.report import param_importances
    out = tmp_path / "s"
    assert search(toy_task_file, space_file, out, "--n-trials", "4") == 0  # the references: lr never varies
    importances, why = param_importances(study_of(out))
    assert "lr" not in importances and "init" not in importances and importances


@pytest.mark.slow
def test_a_search_prints_one_line_per_finished_trial_unless_quiet(toy_task_file, space_file, tmp_path):
    """Run as a user would, with stderr not a terminal (a log, CI): plain lines, no bar."""
    import subprocess
    import sys
    from pathlib import Path
    cmd = [str(Path(sys.executable).with_name("autoplace")), "search", "--task", str(toy_task_file), "--space",
           str(space_file), "--model", "tiny-gpt2", "--n-trials", "5", "--pruner", "none"]
    done = subprocess.run(cmd + ["--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("autoplace: trial ")]
    assert len(lines) == 5 and "\r" not in done.stderr  # one line per trial, no bar redrawn in a log
    assert lines[0].startswith("autoplace: trial 0 complete (1/5 done, ETA ")
    assert "none `{sentence} It was [MASK]` [yes/no] · dev acc " in lines[0] and "best " in lines[0]  # its words too
    assert lines[-1].startswith("autoplace: trial 4 complete (5/5 done) · ")
    assert json.loads(done.stdout)["trials"]["complete"] == 5
    quiet = subprocess.run(cmd + ["--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True,
                           timeout=600)
    assert quiet.returncode == 0 and "autoplace: trial" not in quiet.stderr


def test_a_new_study_queues_the_references_first_then_exactly_n_trials(space_file, tmp_path):
    """The process that creates a study enqueues the reference placements first, then fills the queue up to
    --n-trials; a worker joining it (or the same command again) adds nothing, and a larger budget tops it up."""
    from types import SimpleNamespace
    from autoplace.study.storage import default_url
    from autoplace.config import SearchConfig
    from autoplace.study.opening import open_study
    cfg = SearchConfig(task="toy", space=str(space_file), out=str(tmp_path), storage=default_url(tmp_path),
                       study_name="queue", model="tiny-gpt2", n_trials=6, progress=False)
    objective = SimpleNamespace(space=load_space(space_file), backbone=SimpleNamespace(causal=True),
                                task=SimpleNamespace(primary_metric="acc"))
    references = ["zero-shot", "start-only", "end-only", "mixed"]
    trials = open_study(cfg, objective).get_trials()
    assert [t.user_attrs.get("reference") for t in trials] == references + [None, None]
    assert all(t.state == TrialState.WAITING for t in trials)
    assert len(open_study(cfg, objective).get_trials()) == 6  # a second worker joins: the budget stays N
    trials = open_study(dataclasses.replace(cfg, n_trials=9), objective).get_trials()
    assert [t.user_attrs.get("reference") for t in trials] == references + [None] * 5


def test_restarts_are_a_space_key_every_trial_trains_with_and_zero_turns_them_off(tmp_path):
    from autoplace.config import RESTARTS, Plan, configs
    space = tmp_path / "space.yaml"
    space.write_text('skeleton: "<start> {sentence} It was [MASK]"\nbudget: {steps: 6, eval_every: 2, restarts: 0}\n')
    assert configs(Plan("{sentence} [MASK]"), load_space(str(space)).budget, 0)[1].restarts == 0
    space.write_text('skeleton: "<start> {sentence} It was [MASK]"\nbudget: {steps: 6, eval_every: 2}\n')
    assert configs(Plan("{sentence} [MASK]"), load_space(str(space)).budget, 0)[1].restarts == RESTARTS == 1


def test_patience_is_a_space_key_that_the_command_line_overrides_and_every_trial_trains_with(tmp_path, toy_task_file,
                                                                                             capsys):
    from autoplace.config import Plan, configs
    from autoplace.config import SearchConfig
    from autoplace.study.opening import effective_budget
    space = tmp_path / "space.yaml"
    space.write_text('skeleton: "<start> {sentence} It was [MASK]"\nencoder: [mlp]\n'
                     "reference: {total_length: 4, lr: 0.05, encoder: mlp, init: vocab}\n"
                     "budget: {steps: 6, eval_every: 2, batch_size: 4, max_length: 32, patience: 1}\n")
    assert load_space(str(space)).budget.patience == 1
    given = dict(task="x", space=str(space), out="o", storage="sqlite://", study_name="s")
    assert effective_budget(SearchConfig(**given), load_space(str(space))).patience == 1
    overridden = effective_budget(SearchConfig(**given, patience=2), load_space(str(space)))
    assert overridden.patience == 2 and configs(Plan("{sentence} [MASK]"), overridden, 0)[1].patience == 2
    assert main(["search", "--task", str(toy_task_file), "--space", str(space), "--model", "tiny-gpt2",
                 "--n-trials", "2", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/run/study.db", study_name="autoplace-toy")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:  # the zero-shot reference trains nothing; the start-only one 6 steps or fewer
        steps = trial.user_attrs["steps"]
        assert steps in (0, 6) or trial.user_attrs["reason"] == (f"stopped at step {steps}: dev did not improve for 1 "
                                                            "evaluations")
    meta = json.loads((tmp_path / "run" / "best" / "template.json").read_text())
    assert meta["train"]["patience"] == 1


def test_eval_examples_is_a_space_key_that_the_command_line_overrides_and_trials_evaluate_with(tmp_path, toy_task_file):
    """budget.eval_examples: each trial's evaluations during training score that many dev examples; the trial's value
    is its kept prompt on all of dev. --eval-examples overrides the space, 0 meaning all of dev."""
    from autoplace.config import Plan, configs
    from autoplace.config import SearchConfig
    from autoplace.study.opening import effective_budget
    space = tmp_path / "space.yaml"
    space.write_text('skeleton: "<start> {sentence} It was [MASK]"\nencoder: [mlp]\n'
                     "reference: {total_length: 4, lr: 0.05, encoder: mlp, init: vocab}\n"
                     "budget: {steps: 4, eval_every: 2, batch_size: 4, max_length: 32, eval_examples: 5}\n")
    given = dict(task="x", space=str(space), out="o", storage="sqlite://", study_name="s")
    assert effective_budget(SearchConfig(**given), load_space(str(space))).eval_examples == 5
    overridden = effective_budget(SearchConfig(**given, eval_examples=0), load_space(str(space)))
    assert overridden.eval_examples == 0 and configs(Plan("{sentence} [MASK]"), overridden, 0)[1].eval_examples == 0
    assert main(["search", "--task", str(toy_task_file), "--space", str(space), "--model", "tiny-gpt2",
                 "--n-trials", "2", "--eval-examples", "3", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/run/study.db", study_name="autoplace-toy")
    zero_shot, trained = study.trials
    dev = 16  # the toy task's dev split; on 3 examples a score is a multiple of 1/3
    assert all(round(3 * v, 6) == round(3 * v) for t in study.trials for v in t.intermediate_values.values())
    assert len(set(zero_shot.intermediate_values.values())) == 1 and sorted(trained.intermediate_values) == [2, 4]
    assert all(round(dev * t.value, 6) == round(dev * t.value) for t in study.trials)  # values: on all 16
    meta = json.loads((tmp_path / "run" / "best" / "template.json").read_text())
    assert meta["train"]["eval_examples"] == 3
