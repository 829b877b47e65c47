"""Ensembles of the top templates (PET): averaged calibrated probabilities, one artifact."""
import json

import pytest
import torch

from autoplace.cli import main
from autoplace.config import PromptConfig
from autoplace.runner import prepare
from autoplace.tasks import get_task
from autoplace.inference import predict
from conftest import write_jsonl


def test_an_ensemble_averages_its_members_calibrated_probabilities_as_computed_by_hand(tiny_gpt2, toy_task_file):
    from autoplace.ensemble import Ensemble
    task = get_task(str(toy_task_file))
    members = [prepare(task, tiny_gpt2, PromptConfig("[P:2] {sentence} It was [MASK]", encoder="none", seed=1,
                                                     max_length=32)),
               prepare(task, tiny_gpt2, PromptConfig("{sentence}\\nSentiment: [P:2] [MASK]", encoder="none",
                                                     verbalizer={"pos": " good", "neg": " bad"}, calibrate=True,
                                                     seed=2, max_length=32))]
    together = Ensemble(members)
    examples = task.load_split("dev")
    by_hand = torch.stack([predict(m.model, m.featurizer.encode_all(examples)).softmax(-1) for m in members]).mean(0)
    assert torch.allclose(together.scores(examples).exp(), by_hand, atol=1e-6)
    labels = torch.tensor([members[0].task.labels.index(ex["label"]) for ex in examples])
    assert together.evaluate("dev")["acc"] == pytest.approx(float((by_hand.argmax(-1) == labels).float().mean()))
    alone = [float((predict(m.model, m.featurizer.encode_all(examples)).argmax(-1) == labels).float().mean())
             for m in members]
    assert together.evaluate("dev")["acc"] not in alone or len(set(alone)) == 1  # it is neither member alone


def test_search_with_an_ensemble_exports_one_artifact_that_eval_predict_and_train_take(toy_task_file, tmp_path,
                                                                                       capsys):
    space = tmp_path / "space.yaml"
    space.write_text('skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"\n'
                     "slots: {min: 1, max: 2}\nlength: {min: 2, max: 3}\nencoder: [none]\n"
                     "lr: {low: 1.0e-2, high: 5.0e-2, log: true}\n"
                     "budget: {steps: 4, eval_every: 2, batch_size: 8, max_length: 32}\n"
                     "reference: {total_length: 2, lr: 0.05, encoder: none, init: vocab}\n")
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(space), "--model", "tiny-gpt2",
                 "--n-trials", "5", "--ensemble", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((out / "best" / "template.json").read_text())
    assert meta["ensemble"] is True and meta["members"] == ["m0", "m1", "m2"] and len(meta["trials"]) == 3
    assert summary["template"].count(" | ") == 2
    assert main(["eval", str(out / "best"), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(summary["test"]["acc"])
    write_jsonl(tmp_path / "in.jsonl", [{"sentence": "the movie was great"}])
    assert main(["predict", str(out / "best"), "--input", str(tmp_path / "in.jsonl")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert set(line["scores"]) == {"pos", "neg"} and sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert main(["train", "--task", str(toy_task_file), "--template", str(out / "best"), "--steps", "2",
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "template.json").read_text())
    assert again["ensemble"] is True and len(again["members"]) == 3 and again["started_from"] == str(out / "best")


def test_search_with_ensemble_tied_averages_the_winner_and_exactly_its_dev_ties(toy_task_file, space_file, tmp_path,
                                                                               capsys):
    import optuna
    from autoplace.study.trials import load_trial, ranked_trials
    from autoplace.study.winner import judge_dev
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(space_file), "--model", "tiny-gpt2",
                 "--n-trials", "6", "--pruner", "none", "--ensemble", "tied", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((out / "best" / "template.json").read_text())
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    ranked = ranked_trials(study)
    (lo, hi), _ = judge_dev(load_trial(study, ranked[0], None)[0], study, ranked[0].number)
    expected = [ranked[0].number] + [t.number for t in ranked[1:] if lo <= t.value <= hi
                                     and not t.user_attrs.get("one_answer")]
    assert meta["ensemble"] is True and meta["trials"] == expected and len(expected) >= 2
    assert len(meta["members"]) == len(expected) and summary["template"].count(" | ") == len(expected) - 1
    assert f"the stored prompts of trials {', '.join(map(str, expected))} answer together" in (
        out / "report.md").read_text()
    assert main(["eval", str(out / "best"), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(summary["test"]["acc"])
    assert main(["export", str(out), "--ensemble", "tied", "--out", str(tmp_path / "again")]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == expected  # export names the same ties


def test_tied_members_leave_out_one_answer_trials_unless_the_winner_is_one(toy_task_file):
    from types import SimpleNamespace
    import optuna
    from autoplace.study.trials import ranked_trials
    from autoplace.study.winner import tied_trials

    def study_of(trials):
        study = optuna.create_study(direction="maximize")
        for value, one_answer in trials:
            study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"one_answer": one_answer}))
        return study
    items = [SimpleNamespace(label=i % 2, group=None) for i in range(32)]
    winner = SimpleNamespace(task=get_task(str(toy_task_file)),  # 21 of 32 right: its interval is about .52-.78
                             predictions=lambda split: ([it.label if i < 21 else 1 - it.label
                                                         for i, it in enumerate(items)], items))
    study = study_of([(21 / 32, False), (0.6, False), (0.55, True), (0.4, False), (0.75, True)])
    assert [t.number for t in tied_trials(study, ranked_trials(study), winner)] == [0, 1]
    degenerate = study_of([(21 / 32, True), (0.6, True), (0.3, True)])
    assert [t.number for t in tied_trials(degenerate, ranked_trials(degenerate), winner)] == [0, 1]


@pytest.mark.parametrize("value", [0, "two", 2.5])
def test_the_api_refuses_an_ensemble_that_is_neither_a_count_nor_tied(toy_task_file, space_file, tmp_path, value):
    from autoplace import api
    from autoplace.errors import AutoplaceError
    with pytest.raises(AutoplaceError, match="give a number of templates"):
        api.search(str(toy_task_file), str(space_file), 3, tmp_path / "s", model="tiny-gpt2", ensemble=value)
    assert not (tmp_path / "s" / "study.db").exists()  # refused before anything was written


def test_a_report_with_dev_ties_says_how_to_average_them(toy_task_file, space_file, tmp_path, capsys):
    import optuna
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(space_file), "--model", "tiny-gpt2",
                 "--n-trials", "6", "--pruner", "none", "--out", str(out)]) == 0
    tied = json.loads(capsys.readouterr().out)["tied"]
    report = (out / "report.md").read_text()
    assert tied and f"(trials {', '.join(map(str, tied))}). `autoplace export OUT --ensemble tied" in report
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    winner = study.user_attrs["final"]["trial"]
    assert main(["export", str(out), "--ensemble", "tied", "--out", str(tmp_path / "avg")]) == 0
    members = json.loads(capsys.readouterr().out)["trials"]
    assert members[0] == winner and sorted(members[1:]) == sorted(tied)  # the ties the report named
