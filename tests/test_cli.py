import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoplace.cli import main
from conftest import REPO, write_jsonl


def run_cli(*args, env=None):
    """The installed entry point in a fresh process, as a user runs it."""
    exe = Path(sys.executable).with_name("autoplace")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=600)


def one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith("autoplace: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_tasks_lists_tasks_and_templates(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("rte", "nli (alias of rte)", "cb", "boolq", "mr", "sentiment"):
        assert name in out
    assert "{premise} Question: {hypothesis}? Answer: [MASK]" in out


def test_train_eval_predict_round_trip(capsys, toy_task_file, tmp_path):
    out = tmp_path / "art"
    assert main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--template",
                 "[P:2] {sentence} It was [P:2] [MASK]", "--steps", "30", "--lr", "0.03", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((out / "template.json").read_text())
    for key in ("template", "task", "model", "verbalizer", "prompt", "steps", "dev", "test", "train_seconds",
                "versions"):
        assert key in meta
    assert meta["dev"] == summary["dev"] and meta["test"] == summary["test"] and meta["steps"] == 30

    assert main(["eval", str(out), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["acc"] == pytest.approx(meta["test"]["acc"])

    write_jsonl(tmp_path / "in.jsonl", [{"sentence": "the movie was great"},
                                        {"sentence": "the movie was awful", "label": "not a label of this task"}])
    assert main(["predict", str(out), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["prediction"] in ("pos", "neg") for p in preds)  # labels in the input are ignored
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 for p in preds)

    # --template DIR continues from the artifact's weights unless --fresh
    assert main(["train", "--task", str(toy_task_file), "--template", str(out), "--steps", "5",
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "template.json").read_text())
    assert again["template"] == meta["template"] and again["started_from"] == str(out)
    assert again["model"] == "tiny-gpt2"
    capsys.readouterr()
    write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "ok"}, {"text": "no sentence"}])
    assert main(["predict", str(out), "--input", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl line 2: field 'sentence' missing" in capsys.readouterr().err


def test_an_artifact_finds_its_task_file_whatever_its_name(capsys, toy_task_file, tmp_path):
    task = toy_task_file.with_name("toy.task")  # get_task takes any existing file
    task.write_text(toy_task_file.read_text())
    out = tmp_path / "art"
    assert main(["train", "--task", str(task), "--model", "tiny-gpt2", "--template", "[P:2] {sentence} It was [MASK]",
                 "--steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "template.json").read_text())["task_file"] == str(task.resolve())
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "dev"]) == 0
    assert "acc" in json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_cli_process_prints_one_line_not_a_traceback(tmp_path):
    one_line_error(run_cli("train", "--task", "cb", "--template", "{premise [MASK]", "--out", tmp_path / "o",
                           "--model", "tiny-gpt2"), "unbalanced brace", "column 1")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_unreachable_hub_model_gives_one_line(tmp_path):
    proc = run_cli("eval", tmp_path, env={"HF_HUB_OFFLINE": "1"})
    one_line_error(proc, "template.json is missing")
    proc = run_cli("train", "--task", "cb", "--model", "bert-base-cased", "--out", tmp_path / "o",
                   env={"HF_HUB_OFFLINE": "1"})
    one_line_error(proc, "'bert-base-cased'", "hub")


@pytest.mark.slow
def test_smollm2_end_to_end_on_fewglue_cb(fewglue, tmp_path):
    """The real backbone on real data, small budget: train writes the artifact, eval reads it back."""
    out = tmp_path / "cb1"
    proc = run_cli("train", "--task", "cb", "--model", "smollm2-135m", "--data-dir", fewglue, "--template",
                   "[P:3] {premise} [P:2] Question: {hypothesis}? [P:2] Answer: [MASK]", "--steps", "4",
                   "--eval-every", "2", "--max-length", "128", "--out", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (out / "prompt.safetensors").is_file() and summary["steps"] == 4
    val = len((fewglue / "CB" / "val.jsonl").read_text().splitlines())
    correct = summary["test"]["acc"] * val  # scored on CB's held-out split (val), whole examples
    assert abs(correct - round(correct)) < 1e-6 and "f1_macro" in summary["test"]
    proc = run_cli("eval", out, "--split", "test", "--data-dir", fewglue)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["acc"] == pytest.approx(summary["test"]["acc"])


def test_cli_choices_are_the_ones_the_code_accepts():
    """The CLI spells its choices out (importing torch/optuna for them would slow `--help`); they must not drift."""
    from autoplace.config import PRECISIONS
    from autoplace.cli import build_parser
    from autoplace.config import ENCODERS, INITS
    from autoplace.config import PRUNERS
    commands = build_parser()._subparsers._group_actions[0].choices
    choices = {(name, a.dest): set(a.choices) for name, p in commands.items() for a in p._actions if a.choices}
    assert choices[("train", "precision")] == choices[("search", "precision")] == set(PRECISIONS)
    assert choices[("train", "encoder")] == set(ENCODERS) and choices[("train", "init")] == set(INITS)
    assert choices[("search", "pruner")] == set(PRUNERS)
