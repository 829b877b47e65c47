"""The bad-input suite: every case exits non-zero with one line naming the problem, and writes nothing."""
import json
import shutil

import pytest

from autoplace.cli import main
from conftest import FEWGLUE, synthetic_rows, write_jsonl

TOY_YAML = ('name: toy\ndata_files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}\nfields: [sentence]\n'
            'verbalizer: {pos: " yes", neg: " no"}\ntemplate: "{sentence} It was [MASK]"\n')
SPACE_YAML = ('skeleton: "<start> {sentence} <end> It was [MASK]"\n'
              'budget: {steps: 4, eval_every: 2, batch_size: 4, max_length: 32}\n')


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy task, a trained artifact and a finished study to break in many ways."""
    root = tmp_path_factory.mktemp("bad-input")
    for split, n, seed in (("train", 16, 0), ("dev", 8, 1), ("test", 8, 2)):
        write_jsonl(root / f"{split}.jsonl", synthetic_rows(n, seed))
    (root / "toy.yaml").write_text(TOY_YAML)
    (root / "space.yaml").write_text(SPACE_YAML)
    assert main(["train", "--task", str(root / "toy.yaml"), "--model", "tiny-gpt2", "--template",
                 "[P:2] {sentence} It was [MASK]", "--steps", "2", "--out", str(root / "artifact")]) == 0
    assert main(["search", "--task", str(root / "toy.yaml"), "--space", str(root / "space.yaml"), "--model",
                 "tiny-gpt2", "--n-trials", "2", "--out", str(root / "study")]) == 0
    return root


def _task(root, tmp, **files):
    """A copy of the toy task in tmp, with some files replaced."""
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "toy.yaml"):
        shutil.copy(root / name, tmp / name)
    for name, text in files.items():
        (tmp / name.replace("_", ".")).write_text(text)
    return str(tmp / "toy.yaml")


def _artifact(root, tmp, change=None):
    shutil.copytree(root / "artifact", tmp / "art")
    if change:
        change(tmp / "art")
    return str(tmp / "art")


def _truncate(folder):
    data = (folder / "prompt.safetensors").read_bytes()
    (folder / "prompt.safetensors").write_bytes(data[:40])


def _rewrite_meta(edit):
    """An artifact change: edit(meta) rewrites its template.json."""
    def change(folder):
        meta = json.loads((folder / "template.json").read_text())
        edit(meta)
        (folder / "template.json").write_text(json.dumps(meta))
    return change


def _edit_meta(**changes):
    return _rewrite_meta(lambda meta: meta.update(changes))


def _drop_meta(key):
    return _rewrite_meta(lambda meta: meta.pop(key))


def _edit_prompt(**changes):
    return _rewrite_meta(lambda meta: meta["prompt"].update(changes))


def train(tmp, task, *extra, template="[P:2] {sentence} It was [MASK]"):
    return ["train", "--task", task, "--model", "tiny-gpt2", "--template", template, "--steps", "2",
            "--out", str(tmp / "out"), *extra]


CASES = {
    # templates
    "template empty": (lambda r, t: train(t, _task(r, t), template=" "), "template is empty"),
    "template unbalanced brace": (lambda r, t: train(t, _task(r, t), template="{sentence It was [MASK]"),
                                  "column 1: unbalanced brace '{'"),
    "template two masks": (lambda r, t: train(t, _task(r, t), template="{sentence} [MASK] [MASK]"),
                           "column 19: template has a second [MASK]"),
    "template unknown field": (lambda r, t: train(t, _task(r, t), template="{sentense} It was [MASK]"),
                               "column 1: unknown field {sentense}"),
    "template slot too long": (lambda r, t: train(t, _task(r, t), template="[P:65] {sentence} [MASK]"),
                               "slot length 65 is outside 1-64"),
    "template mask not last (causal)": (lambda r, t: train(t, _task(r, t), template="{sentence} [MASK] [P:2]"),
                                        "[MASK] must end the template for a causal model"),
    # search-space YAML
    "space unknown key": (lambda r, t: _search(r, t, space=SPACE_YAML + "colour: red\n"), "key 'colour' is not a known key"),
    "space length range": (lambda r, t: _search(r, t, space=SPACE_YAML + "length: {min: 0, max: 3}\n"),
                           "key 'length' needs 0 < min <= max"),
    "space broken YAML": (lambda r, t: _search(r, t, space="skeleton: [oops\n"), "space.yaml line 2: not valid YAML"),
    "space field not in task": (lambda r, t: _search(r, t, space='skeleton: "<start> {review} [MASK]"\n'),
                                "unknown field {review}"),
    # task YAML
    "task missing verbalizer": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML.replace(
        'verbalizer: {pos: " yes", neg: " no"}\n', ""))), "key 'verbalizer' is required"),
    "task unknown key": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "labels: [a]\n")),
                         "key 'labels' is not a known key"),
    "task data file not a name": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML.replace(
        "train: train.jsonl", "train: 5"))), "key 'data_files.train' must be a file name"),
    "task metrics not a list": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "metrics: f1_macro\n")),
                                "key 'metrics' must be a list of acc, f1_macro"),
    "task file missing": (lambda r, t: train(t, str(t / "nope.yaml")), "nope.yaml: No such file or directory"),
    # data files
    "data missing field": (lambda r, t: train(t, _task(r, t, train_jsonl='{"text": "x", "label": "pos"}\n')),
                           "split train: field 'sentence' missing"),
    "data unknown label": (lambda r, t: train(t, _task(r, t, dev_jsonl='{"sentence": "a", "label": "pos"}\n'
                                                               '{"sentence": "b", "label": "meh"}\n')),
                           "split dev, example 2: unknown label 'meh'"),
    "data empty split": (lambda r, t: train(t, _task(r, t, train_jsonl="")), "train.jsonl: is empty"),
    "data broken JSON line": (lambda r, t: train(t, _task(r, t, dev_jsonl='{"sentence": "a", "label": "pos"}\n'
                                                                  '{"sentence": "b", \n')),
                              "dev.jsonl line 2: broken JSON"),
    "data dir without the task": (lambda r, t: ["train", "--task", "cb", "--model", "tiny-gpt2", "--data-dir", str(t),
                                                 "--out", str(t / "out")],
                                  "no CB folder with train.jsonl"),
    # artifacts
    "artifact missing weights": (lambda r, t: ["eval", _artifact(r, t, lambda f: (f / "prompt.safetensors").unlink())],
                                 "prompt.safetensors is missing"),
    "artifact truncated weights": (lambda r, t: ["eval", _artifact(r, t, _truncate)], "does not match the checksum"),
    "artifact wrong checksum": (lambda r, t: ["eval", _artifact(r, t, _edit_meta(weights_sha256="0" * 64))],
                                "does not match the checksum"),
    "artifact other model": (lambda r, t: ["eval", _artifact(r, t), "--model", "tiny-bert"],
                             "was trained on tiny-gpt2 (vocab_size 49152); backbone tiny-bert has vocab_size 49153"),
    "artifact format version": (lambda r, t: ["eval", _artifact(r, t, _edit_meta(format_version=99))],
                                "format version 99 is not 1"),
    "artifact meta lacks a key": (lambda r, t: ["eval", _artifact(r, t, _drop_meta("prompt"))],
                                  "template.json lacks prompt"),
    "artifact prompt from another version": (lambda r, t: ["eval", _artifact(r, t, _edit_prompt(colour="red"))],
                                             "prompt settings do not fit this version"),
    "artifact not a folder": (lambda r, t: ["eval", str(t / "missing")], "no such folder"),
    # storage URLs and studies
    "storage not a URL": (lambda r, t: _search(r, t, storage="study.db"), "not a storage URL"),
    "storage unreachable, password hidden": (
        lambda r, t: _search(r, t, storage="postgresql://u:hunter2@127.0.0.1:1/x"), "u:***@127.0.0.1:1/x"),
    "export unknown study": (lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                           "nope", "--out", str(t / "out")], "has no study 'nope'"),
    "export unknown trial": (lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                           "autoplace-toy", "--trial", "99", "--out", str(t / "out")],
                             "has no trial 99"),
    # CLI arguments
    "cli steps zero": (lambda r, t: train(t, _task(r, t), "--steps", "0"), "argument --steps: '0' must be positive"),
    "cli bad encoder": (lambda r, t: train(t, _task(r, t), "--encoder", "gru"), "invalid choice: 'gru'"),
    "cli unknown task": (lambda r, t: train(t, "nope"), "unknown task 'nope'"),
    "cli missing --out": (lambda r, t: ["train", "--task", "cb"], "the following arguments are required: --out"),
    "predict input missing field": (lambda r, t: _predict(r, t, '{"sentence": "a"}\n{"text": "b"}\n'),
                                    "in.jsonl line 2: field 'sentence' missing"),
    "cli unknown device": (lambda r, t: train(t, _task(r, t), "--device", "foo"), "device 'foo' is not a device"),
    "cli absent device": (lambda r, t: train(t, _task(r, t), "--device", "cuda:99"), "device 'cuda:99'"),
    "search unknown device": (lambda r, t: _search(r, t) + ["--devices", "cpu,foo"], "device 'foo' is not a device"),
    "predict broken input": (lambda r, t: _predict(r, t, '{"sentence": "a"\n'), "in.jsonl line 1: broken JSON"),
}


def _search(root, tmp, space=None, storage=None):
    path = root / "space.yaml"
    if space is not None:
        path = tmp / "space.yaml"
        path.write_text(space)
    args = ["search", "--task", str(root / "toy.yaml"), "--space", str(path), "--model", "tiny-gpt2",
            "--n-trials", "2", "--out", str(tmp / "out")]
    return args + (["--storage", storage] if storage else [])


def _predict(root, tmp, text):
    (tmp / "in.jsonl").write_text(text)
    return ["predict", str(root / "artifact"), "--input", str(tmp / "in.jsonl"), "--output", str(tmp / "out")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, trained, tmp_path, capsys):
    build, needle = CASES[case]
    args = build(trained, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("autoplace: error: "), err
    assert needle in err[0], err[0]
    assert "Traceback" not in err[0] and "hunter2" not in err[0]
    assert not (tmp_path / "out").exists()  # nothing half-written
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before


def test_suite_is_large_enough():
    assert len(CASES) >= 25


def test_shared_data_is_beside_the_repo():
    assert (FEWGLUE / "CB" / "val.jsonl").is_file()
