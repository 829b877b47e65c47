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
