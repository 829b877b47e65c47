"""The Python face: autoplace.search / train / load, the same code paths as the command line."""
import json
import subprocess
import sys

import pytest

import autoplace
from autoplace.cli import main
from autoplace.errors import AutoplaceError
from conftest import REPO, write_jsonl

SPACE = """
skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"
slots: {min: 1, max: 2}
length: {min: 2, max: 3}
encoder: [none]
lr: {low: 1.0e-2, high: 5.0e-2, log: true}
budget: {steps: 4, eval_every: 2, batch_size: 8, max_length: 32}
reference: {total_length: 2, lr: 0.05, encoder: none, init: vocab}
"""


@pytest.mark.slow
def test_importing_autoplace_does_not_load_torch():
    code = "import sys, autoplace, autoplace.cli; autoplace.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_python_train_load_predict_matches_the_command_line(toy_task_file, tmp_path, capsys):
    trained = autoplace.train(str(toy_task_file), "[P:2] {sentence} It was [MASK]", tmp_path / "a",
                              model="tiny-gpt2", steps=4, eval_every=2)
    assert (tmp_path / "a" / "template.json").is_file() and trained.summary["steps"] == 4
    loaded = autoplace.load(tmp_path / "a")
    examples = [{"sentence": "the movie was great", "id": "x1"}, {"sentence": "the movie was awful"}]
    answers = loaded.predict(examples)
    assert [set(a) for a in answers] == [{"prediction", "scores"}] * 2
    assert loaded.evaluate("dev") == trained.evaluate("dev") == trained.summary["dev"]
    import datasets
    assert loaded.predict(datasets.Dataset.from_list(examples)) == answers  # a Dataset works as well
    write_jsonl(tmp_path / "in.jsonl", examples)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "a"), "--input", str(tmp_path / "in.jsonl"), "--echo"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ["x1", 2]  # the input's id, else its line number
    assert [{k: v for k, v in line.items() if k not in ("id", "input")} for line in lines] == answers
    assert lines[0]["input"] == examples[0]
    with pytest.raises(AutoplaceError, match="example 1: needs the fields sentence"):
        loaded.predict([{"text": "no sentence"}])


def test_python_search_returns_the_study_and_the_winner(toy_task_file, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    found = autoplace.search(str(toy_task_file), str(tmp_path / "space.yaml"), n_trials=4, out=tmp_path / "s",
                             model="tiny-gpt2", pruner="none")
    assert len(found.study.trials) == 4 and found.summary["study_name"] == found.study.study_name
    assert found.winner.meta["template"] == found.summary["template"]
    assert found.winner.evaluate("test") == found.summary["test"]


def test_eval_scores_in_the_artifacts_precision_unless_told(toy_task_file, tmp_path, capsys):
    assert main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--precision", "bf16", "--template",
                 "[P:2] {sentence} It was [MASK]", "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    recorded = json.loads(capsys.readouterr().out)["test"]
    assert json.loads((tmp_path / "a" / "template.json").read_text())["precision"] == "bf16"
    assert main(["eval", str(tmp_path / "a"), "--split", "test"]) == 0
    out = capsys.readouterr()
    assert {k: v for k, v in json.loads(out.out).items() if k in recorded} == recorded and out.err == ""
    assert main(["eval", str(tmp_path / "a"), "--split", "test", "--precision", "fp32"]) == 0
    assert "scoring in fp32, not bf16" in capsys.readouterr().err


def test_train_without_a_slot_says_it_scores_the_template_zero_shot(toy_task_file, tmp_path, capsys):
    assert main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--template",
                 "{sentence} It was [MASK]", "--steps", "5", "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "has no [P] slot: nothing to train, it is scored zero-shot" in captured.err
    assert json.loads(captured.out)["steps"] == 0


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    """The README's Python example, as printed there, on the tiny model and MR data."""
    text = (REPO / "README.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    example = example.replace('"runs/', f'"{tmp_path}/runs/').replace("n_trials=12", "n_trials=3")
    example = example.replace('task="mr",', 'task="mr", model="tiny-gpt2", steps=2, eval_every=1, max_length=48,')
    code = "import torch; torch.set_num_threads(2)\n" + example
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prediction" in done.stdout
