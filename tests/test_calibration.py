"""Contextual calibration (Zhao et al. 2021): the content-free prior, computed, refreshed and stored."""
import json
import math

import pytest
import torch

from autoplace.calibration import apply
from autoplace.cli import main
from autoplace.config import PromptConfig
from autoplace.runner import export, fit, prepare
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.inference import evaluate, predict


def test_calibration_divides_by_the_content_free_distribution_as_computed_by_hand():
    scores = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    p_cf = torch.tensor([0.8, 0.2])
    calibrated = apply(scores, p_cf.log())
    by_hand = [[math.log(math.exp(a) / (math.exp(a) + math.exp(b)) / p) for (a, b), p in
                zip([(2.0, 1.0), (1.0, 2.0)], p_cf.tolist())],
               [math.log(math.exp(a) / (math.exp(a) + math.exp(b)) / p) for (a, b), p in
                zip([(0.5, 0.0), (0.0, 0.5)], p_cf.tolist())]]
    assert torch.allclose(calibrated, torch.tensor(by_hand), atol=1e-6)
    assert scores.argmax(-1).tolist() == [0, 0] and calibrated.argmax(-1).tolist() == [1, 1]  # the bias is undone
    assert apply(scores, None) is scores


def test_a_calibrated_prompt_scores_dev_with_its_content_free_prior(tiny_gpt2, toy_task_file):
    task = get_task(str(toy_task_file))
    cfg = PromptConfig("[P:2] {sentence} It was [MASK]", encoder="none", calibrate=True, max_length=32)
    run = prepare(task, tiny_gpt2, cfg)
    dev = run.items("dev")
    raw = predict(run.model, dev, calibrated=False)
    content_free = predict(run.model, run.model.content_free, calibrated=False)
    assert len(run.model.content_free) == 3  # "N/A", "", "[MASK]"
    prior = content_free.softmax(-1).mean(0)
    by_hand = raw.log_softmax(-1) - prior.log()
    assert torch.allclose(predict(run.model, dev), by_hand, atol=1e-5)
    labels = torch.tensor([it.label for it in dev])
    metrics, _ = evaluate(run.model, task, dev)
    assert metrics["acc"] == pytest.approx(float((by_hand.argmax(-1) == labels).float().mean()))
    assert (by_hand - raw.log_softmax(-1)).abs().min() > 0.1  # the prior is far from uniform: calibration mattered


def test_calibration_is_recomputed_after_training_and_stored_in_the_artifact(tiny_gpt2, toy_task_file, tmp_path,
                                                                              capsys):
    task = get_task(str(toy_task_file))
    run = prepare(task, tiny_gpt2, PromptConfig("[P:2] {sentence} It was [MASK]", encoder="none", calibrate=True,
                                                max_length=32))
    before = run.model.log_prior.clone()
    result = fit(run, TrainConfig(steps=6, eval_every=3, lr=0.05), progress=False)
    assert not torch.allclose(before, run.model.log_prior)  # the prompt moved its content-free bias
    from autoplace.runner import metadata
    out = tmp_path / "art"
    export(out, run, metadata(run, TrainConfig(steps=6, eval_every=3, lr=0.05), result, None))
    meta = json.loads((out / "template.json").read_text())
    assert meta["prompt"]["calibrate"] is True
    assert meta["calibration"]["p_cf"] == pytest.approx(run.model.log_prior.exp().tolist())
    assert main(["eval", str(out), "--split", "dev"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(run.evaluate("dev")["acc"])
    meta["calibration"]["p_cf"] = [0.999, 0.001]  # a prior this lopsided sends every example to the second label
    (out / "template.json").write_text(json.dumps(meta))
    assert main(["eval", str(out), "--split", "dev"]) == 0
    second = task.labels[1]
    share = sum(ex["label"] == second for ex in task.load_split("dev")) / len(task.load_split("dev"))
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(share)


def test_train_takes_label_words_and_calibration_from_the_command_line(toy_task_file, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--template",
                 "{sentence}\\nSentiment: [P:2] [MASK]", "--verbalizer", '{"pos": " good", "neg": " bad"}',
                 "--calibrate", "--steps", "2", "--out", str(out)]) == 0
    meta = json.loads((out / "template.json").read_text())
    assert meta["verbalizer"] == {"pos": " good", "neg": " bad"} and meta["prompt"]["calibrate"] is True
    assert meta["template"] == "{sentence}\nSentiment: [P:2] [MASK]"  # a written \n is a newline
    assert "calibration" in meta
