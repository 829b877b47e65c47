"""The words as well as the places: phrasings and label words in the space, the zero-shot screen, automatic label
words and contextual calibration."""
import json
import math

import optuna
import pytest
import torch

from autoplace.calibration import apply
from autoplace.cli import main
from autoplace.pipeline import PromptConfig
from autoplace.runner import export, fit, prepare
from autoplace.search.screen import screen
from autoplace.search.space import load_space
from autoplace.tasks import get_task
from autoplace.trainer import TrainConfig, evaluate, predict
from conftest import write_jsonl

WORDS_SPACE = """
templates:
  - "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"
  - '<start> Review: {sentence} <after:sentence>\\nSentiment: <before:answer> [MASK]'
verbalizers:
  - {pos: " yes", neg: " no"}
  - {pos: " same", neg: " same"}
  - auto
calibrate: [none, content_free]
screen: {keep: 3, examples: 64}
auto_verbalizer: {k: 3, n: 2}
slots: {min: 1, max: 2}
length: {min: 2, max: 3}
encoder: [none, mlp]
lr: {low: 1.0e-3, high: 5.0e-2, log: true}
budget: {steps: 6, eval_every: 3, batch_size: 8, max_length: 48}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab}
"""


@pytest.fixture
def words_space(tmp_path):
    path = tmp_path / "words.yaml"
    path.write_text(WORDS_SPACE)
    return path


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


def test_space_lists_phrasings_words_and_calibrations(words_space, toy_task_file):
    space = load_space(words_space)
    space.check(get_task(str(toy_task_file)))
    assert len(space.skeletons) == 2 and space.skeletons[1].manual_template == "Review: {sentence}\nSentiment: [MASK]"
    assert space.verbalizers == [{"pos": " yes", "neg": " no"}, {"pos": " same", "neg": " same"}]
    assert space.auto_verbalizers and space.calibrations == ("none", "content_free") and space.screen_keep == 3


def test_the_screen_scores_every_candidate_drops_what_cannot_work_and_keeps_the_best(words_space, toy_task_file,
                                                                                   tiny_gpt2):
    space, task = load_space(words_space), get_task(str(toy_task_file))
    kept, record = screen(space, task, tiny_gpt2, None)
    rows = {row["key"]: row for row in record["rows"]}
    # 2 templates x (2 listed + 2 automatic label words) x 2 calibrations
    assert len(rows) == 16 and record["examples"] == {"train": 32, "dev": 16}
    assert rows["t0.v1.raw"]["reason"] == "labels pos and neg share the first token ' same'"
    usable = sorted((r for r in record["rows"] if r["both"] is not None), key=lambda r: -r["both"])
    assert [w.key for w in kept] == record["kept"] == [r["key"] for r in usable[:3]]
    assert all(rows[k]["reason"] is None for k in record["kept"])
    assert all(r["reason"].startswith("below the best 3") for r in usable[3:])
    for row in record["rows"]:  # accuracy over train and dev together ranks them
        if row["both"] is not None:
            assert row["both"] == pytest.approx((32 * row["train"] + 16 * row["dev"]) / 48)
    automatic = [r["verbalizer"] for k, r in rows.items() if ".a" in k and k.endswith(".raw")]
    assert len(automatic) == 4
    for words in automatic:
        assert set(words) == {"pos", "neg"} and len(set(words.values())) == 2
        assert all(w.startswith(" ") and w[1:].isalpha() for w in words.values())


def test_a_search_over_words_and_places_runs_screen_study_export_predict(words_space, toy_task_file, tmp_path,
                                                                        capsys):
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(words_space), "--model", "tiny-gpt2",
                 "--n-trials", "8", "--pruner", "none", "--out", str(out)]) == 0
    capsys.readouterr()
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    kept = study.user_attrs["screen"]["kept"]
    assert [w["key"] for w in study.user_attrs["words"]] == kept and len(kept) == 3
    zero_shot = [t for t in study.trials if t.user_attrs.get("reference") == "zero-shot"]
    assert sorted(t.params["words"] for t in zero_shot) == sorted(kept)  # each kept candidate, zero-shot
    placed = [t for t in study.trials if t.user_attrs.get("reference") in ("start-only", "end-only", "mixed")]
    assert placed and all(t.params["words"] == kept[0] for t in placed)  # the placement references use the best
    best = json.loads((out / "best" / "template.json").read_text())
    winner = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best["verbalizer"] == winner.user_attrs["verbalizer"]
    report = (out / "report.md").read_text()
    assert "## Zero-shot screen" in report and "share the first token" in report and report.count("**kept**") == 3
    write_jsonl(tmp_path / "in.jsonl", [{"sentence": "the movie was great"}, {"sentence": "the movie was bad"}])
    assert main(["predict", str(out / "best"), "--input", str(tmp_path / "in.jsonl")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(line["prediction"] in ("pos", "neg") for line in lines)
    assert main(["eval", str(out / "best"), "--split", "dev"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(best["dev"]["acc"])
