"""The bad-input suite: every case exits with status 2 and one line naming the problem, and writes nothing."""
import errno
import json
import os
import pathlib
import shutil

import pytest
import torch

from autoplace import artifact
from autoplace.cli import main
from autoplace.errors import AutoplaceError
from conftest import FEWGLUE, synthetic_rows, write_jsonl

TOY_YAML = ('name: toy\ndata_files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}\nfields: [sentence]\n'
            'verbalizer: {pos: " yes", neg: " no"}\ntemplate: "{sentence} It was [MASK]"\n')
CLOZE_YAML = ('name: toy\nkind: cloze\ndata_files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}\n'
              'fields: [sentence]\ntarget_field: label\ntemplate: "{sentence} It was [MASK]"\n')
CHOICE_YAML = ('name: pick\nkind: choice\ndata_files: {train: c.jsonl, dev: c.jsonl, test: c.jsonl}\n'
               'fields: [premise]\nchoices: [a, b]\ntemplate: "{premise} So [MASK]"\n')
CHOICE_ROW = {"premise": "It rained.", "a": "The street got wet.", "b": "The sun shone.", "label": 0}


def _choice(tmp, rows, yaml=CHOICE_YAML, template="[P:2] {premise} So [MASK]", model="tiny-gpt2"):
    """A choice task (candidate fields a, b) in tmp: one good example, then `rows`."""
    (tmp / "pick.yaml").write_text(yaml)
    write_jsonl(tmp / "c.jsonl", [CHOICE_ROW, *rows])
    return ["train", "--task", str(tmp / "pick.yaml"), "--model", model, "--template", template, "--steps", "2",
            "--out", str(tmp / "out")]


def _multirc(tmp, line):
    """The built-in multirc task on a FewGLUE-style folder whose train file holds `line`."""
    folder = tmp / "MultiRC"
    folder.mkdir()
    good = (FEWGLUE / "MultiRC" / "dev32.jsonl").read_text()
    (folder / "train.jsonl").write_text(json.dumps(line) + "\n")
    (folder / "dev32.jsonl").write_text(good)
    (folder / "val.jsonl").write_text(good)
    return ["train", "--task", "multirc", "--model", "tiny-gpt2", "--data-dir", str(tmp), "--steps", "2",
            "--max-length", "64", "--out", str(tmp / "out")]


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
    assert main(["export", "--storage", f"sqlite:///{root}/study/study.db", "--study-name", "autoplace-toy",
                 "--ensemble", "2", "--out", str(root / "ensemble")]) == 0
    return root


def _task(root, tmp, **files):
    """A copy of the toy task in tmp, with some files replaced."""
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "toy.yaml"):
        shutil.copy(root / name, tmp / name)
    for name, text in files.items():
        _write(tmp / name.replace("_", "."), text)
    return str(tmp / "toy.yaml")


def _write(path, content):
    """Text, or bytes for files that are not text at all."""
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)


def _artifact(root, tmp, change=None, source="artifact"):
    shutil.copytree(root / source, tmp / "art")
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


LATIN1 = "caf\u00e9\n".encode("latin-1")  # a file saved in another encoding
BINARY = b"\x00\x01\x02\x03binary\x00"

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
    "template depth beyond the model": (lambda r, t: train(t, _task(r, t), template="{sentence} [P:2@7] It was [MASK]"),
                                        "slot depth @7 is beyond tiny-gpt2's 2 layers (use @0 to @1, or @all)"),
    "template depth not a layer": (lambda r, t: train(t, _task(r, t), template="{sentence} [P:2@top] [MASK]"),
                                   "slot depth 'top' is not a layer number or 'all'"),
    "template mask not last (causal)": (lambda r, t: train(t, _task(r, t), template="{sentence} [MASK] [P:2]"),
                                        "[MASK] must end the template for a causal model"),
    # search-space YAML
    "space unknown key": (lambda r, t: _search(r, t, space=SPACE_YAML + "colour: red\n"),
                          "key 'colour' is not a known key"),
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
    "ensemble member's weights missing": (
        lambda r, t: ["eval", _artifact(r, t, lambda f: (f / "m1" / "prompt.safetensors").unlink(), "ensemble")],
        "art/m1: prompt.safetensors is missing"),
    "ensemble member's weights altered": (
        lambda r, t: ["eval", _artifact(r, t, lambda f: _truncate(f / "m0"), "ensemble")],
        "art/m0: prompt.safetensors does not match the checksum"),
    "search ensemble larger than the trials": (lambda r, t: _search(r, t) + ["--ensemble", "3"],
                                               "--ensemble 3 is larger than --n-trials 2"),
    "search ensemble neither a number nor tied": (lambda r, t: _search(r, t) + ["--ensemble", "two"],
                                                  "'two' is neither a number of templates (1 or more) nor 'tied'"),
    "export ensemble larger than the completed trials": (
        lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name", "autoplace-toy",
                      "--ensemble", "3", "--out", str(t / "out")],
        "--ensemble 3: the study has only 2 distinct completed trial(s)"),
    # storage URLs and studies
    "storage not a URL": (lambda r, t: _search(r, t, storage="study.db"), "not a storage URL"),
    "storage unreachable, password hidden": (
        lambda r, t: _search(r, t, storage="postgresql://u:hunter2@127.0.0.1:1/x"), "u:***@127.0.0.1:1/x"),
    "export unknown study": (lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                           "nope", "--out", str(t / "out")], "has no study 'nope'"),
    "report unknown study": (lambda r, t: ["report", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                           "nope", "--out", str(t / "out")], "has no study 'nope'"),
    "export unknown trial": (lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                           "autoplace-toy", "--trial", "99", "--out", str(t / "out")],
                             "has no trial 99"),
    # CLI arguments
    "cli steps zero": (lambda r, t: train(t, _task(r, t), "--steps", "0"), "argument --steps: '0' must be positive"),
    "cli restarts negative": (lambda r, t: train(t, _task(r, t), "--restarts", "-1"),
                              "argument --restarts: '-1' must be 0 or more"),
    "cli bad encoder": (lambda r, t: train(t, _task(r, t), "--encoder", "gru"), "invalid choice: 'gru'"),
    "cli unknown task": (lambda r, t: train(t, "nope"), "unknown task 'nope'"),
    "cli missing --out": (lambda r, t: ["train", "--task", "cb"], "the following arguments are required: --out"),
    "predict input missing field": (lambda r, t: _predict(r, t, '{"sentence": "a"}\n{"text": "b"}\n'),
                                    "in.jsonl line 2: field 'sentence' missing"),
    "cli unknown device": (lambda r, t: train(t, _task(r, t), "--device", "foo"), "device 'foo' is not a device"),
    "cli absent device": (lambda r, t: train(t, _task(r, t), "--device", "cuda:99"), "device 'cuda:99'"),
    "search unknown device": (lambda r, t: _search(r, t) + ["--devices", "cpu,foo"], "device 'foo' is not a device"),
    # phrasings, label words and calibration
    "space empty templates": (lambda r, t: _search(r, t, space="templates: []\n"),
                              "key 'templates' must be a non-empty list of skeletons"),
    "space empty verbalizers": (lambda r, t: _search(r, t, space=SPACE_YAML + "verbalizers: []\n"),
                                "key 'verbalizers' must be a non-empty list"),
    "space verbalizer lacks a label": (
        lambda r, t: _search(r, t, space=SPACE_YAML + 'verbalizers: [{pos: " yes", other: " x"}]\n'),
        "lacks label 'neg' (task toy has pos, neg)"),
    "space verbalizer names a label the task lacks": (
        lambda r, t: _search(r, t, space=SPACE_YAML + 'verbalizers: [{pos: " a", neg: " b", meh: " c"}]\n'),
        "names label 'meh', which the task lacks"),
    "space auto words on a cloze task": (
        lambda r, t: _search(r, t, space=SPACE_YAML + "verbalizers: auto\n", task=_task(r, t, toy_yaml=CLOZE_YAML)),
        "verbalizers and calibration need label words, and task toy is a cloze task"),
    "space calibrate unknown": (lambda r, t: _search(r, t, space=SPACE_YAML + "calibrate: [always]\n"),
                                "key 'calibrate' must be a non-empty list of none, content_free"),
    "search cv with more folds than examples": (lambda r, t: _search(r, t) + ["--select", "cv", "--folds", "30"],
                                                 "--select cv needs 2 or more folds, and at least as many examples"),
    "search a task template with no field": (
        lambda r, t: ["search", "--task", _task(r, t, toy_yaml=TOY_YAML.replace("{sentence} It was [MASK]",
                                                                              "It was [MASK]")),
                      "--model", "tiny-gpt2", "--out", str(t / "out")],
        "its template 'It was [MASK]' has no {field}"),
    "space --out into a missing folder": (lambda r, t: ["space", "--task", "rte", "--out", str(t / "nope" / "s.yaml")],
                                          "nope does not exist"),
    "train verbalizer not JSON": (lambda r, t: train(t, _task(r, t), "--verbalizer", "pos=yes"),
                                  "argument --verbalizer: 'pos=yes' is not a JSON object of label -> word"),
    "train verbalizer lacks a label": (lambda r, t: train(t, _task(r, t), "--verbalizer", '{"pos": " a"}'),
                                       "lacks label 'neg'"),
    "predict broken input": (lambda r, t: _predict(r, t, '{"sentence": "a"\n'), "in.jsonl line 1: broken JSON"),
    # files that are not UTF-8 text, wherever a file is read
    "predict input not UTF-8": (lambda r, t: _predict(r, t, '{"sentence": "ok"}\n'.encode() + LATIN1),
                                "in.jsonl line 2: not UTF-8 text (byte 0xe9)"),
    "predict input binary": (lambda r, t: _predict(r, t, BINARY), "in.jsonl line 1: holds a NUL byte"),
    "data file not UTF-8": (lambda r, t: train(t, _task(r, t, dev_jsonl=LATIN1)), "dev.jsonl line 1: not UTF-8 text"),
    "data file binary": (lambda r, t: train(t, _task(r, t, train_jsonl=BINARY)),
                         "train.jsonl line 1: holds a NUL byte"),
    "data csv not UTF-8": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML.replace("dev.jsonl", "dev.csv"),
                                                       dev_csv=b"sentence,label\n" + LATIN1)),
                           "dev.csv line 2: not UTF-8 text"),
    "task file not UTF-8": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML.encode() + b"# " + LATIN1)),
                            "toy.yaml line 6: not UTF-8 text"),
    "task file binary": (lambda r, t: train(t, _task(r, t, toy_yaml=BINARY)), "toy.yaml line 1: holds a NUL byte"),
    "space file not UTF-8": (lambda r, t: _search(r, t, space=LATIN1), "space.yaml line 1: not UTF-8 text"),
    "space file binary": (lambda r, t: _search(r, t, space=BINARY), "space.yaml line 1: holds a NUL byte"),
    "template file not UTF-8": (lambda r, t: train(t, _task(r, t, tpl_txt=LATIN1), template=str(t / "tpl.txt")),
                                "template file"),
    "space number not finite": (lambda r, t: _search(r, t, space=SPACE_YAML + "lr: {low: .inf, high: .nan}\n"),
                                "key 'lr.low' must be a finite number"),
    # a template too long to be a path is template text
    "template longer than a path": (lambda r, t: train(t, _task(r, t),
                                                       template="{sentence} " + "[P:65] " * 40 + "[MASK]"),
                                    "slot length 65 is outside 1-64"),
    # values that are not text are refused, naming the line and field, unless the task says coerce: true
    "predict field a number": (lambda r, t: _predict(r, t, '{"sentence": "a"}\n{"sentence": 12}\n'),
                               "in.jsonl line 2: field 'sentence' is a number, not text"),
    "predict field null": (lambda r, t: _predict(r, t, '{"sentence": null}\n'), "line 1: field 'sentence' is null"),
    "predict field a list": (lambda r, t: _predict(r, t, '{"sentence": ["a"]}\n'), "field 'sentence' is a list"),
    "predict field an object": (lambda r, t: _predict(r, t, '{"sentence": {"a": 1}}\n'),
                                "field 'sentence' is an object"),
    "data field a number": (lambda r, t: train(t, _task(r, t, dev_jsonl='{"sentence": "a", "label": "pos"}\n'
                                                                  '{"sentence": 7, "label": "neg"}\n')),
                            "split dev, example 2: field 'sentence' is a number"),
    "data field null": (lambda r, t: train(t, _task(r, t, dev_jsonl='{"sentence": null, "label": "pos"}\n')),
                        "split dev, example 1: field 'sentence' is null"),
    "task coerce not a boolean": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "coerce: sometimes\n")),
                                  "key 'coerce' must be true or false"),
    # choice tasks, whole-answer scoring, nested FewGLUE files
    "choice example without candidates": (lambda r, t: _choice(t, [{**CHOICE_ROW, "a": "", "b": " "}]),
                                          "example 2: no candidate (fields a, b are empty)"),
    "choice label out of range": (lambda r, t: _choice(t, [{**CHOICE_ROW, "label": 2}]),
                                  "example 2: label 2 is not the index of one of its 2 candidates (0 to 1)"),
    "choice candidate field missing": (lambda r, t: _choice(t, [], yaml=CHOICE_YAML.replace("[a, b]", "[a, c]")),
                                       "field 'c' missing"),
    "choice task with a verbalizer": (lambda r, t: _choice(t, [], yaml=CHOICE_YAML + 'verbalizer: {a: " x"}\n'),
                                      "key 'verbalizer' is not used by a choice task"),
    "select not a metric of the task": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "select: f1a\n")),
                                        "key 'select' must be one of the task's metrics (acc), not 'f1a'"),
    "em without a group field": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "metrics: [em]\n")),
                                 "key 'group_field' must name the field that groups answer options"),
    "answer_scoring unknown": (lambda r, t: train(t, _task(r, t, toy_yaml=TOY_YAML + "answer_scoring: longest\n")),
                               "key 'answer_scoring' must be one of first_token, full, mean, not 'longest'"),
    "answer_scoring first_token on a choice task": (
        lambda r, t: _choice(t, [], yaml=CHOICE_YAML + "answer_scoring: first_token\n"),
        "answer_scoring 'first_token': a choice task takes full or mean"),
    "masked LM cannot fit the answer's masks": (
        lambda r, t: _choice(t, [{**CHOICE_ROW, "a": "rain " * 40}], template="{premise} So [MASK] [P:2]",
                             model="tiny-bert") + ["--max-length", "24"],
        "cannot be scored within max length 24: a masked LM needs one [MASK] per token"),
    "multirc line without questions": (lambda r, t: _multirc(t, {"idx": 0, "passage": {"text": "x", "questions": []}}),
                                       "train.jsonl, line 1: a MultiRC line needs passage.text and passage.questions"),
    "multirc label not 0 or 1": (lambda r, t: _multirc(t, {"idx": 0, "passage": {"text": "x", "questions": [
        {"question": "q?", "answers": [{"text": "a", "label": 7}]}]}}), "train.jsonl, line 1: a MultiRC line needs"),
    # an input line over 1 MB
    "predict line over 1 MB": (lambda r, t: _predict(r, t, json.dumps({"sentence": "a" * 1_000_000}) + "\n"),
                               "in.jsonl line 1: over 1 MB of text"),
    "data line over 1 MB": (lambda r, t: train(t, _task(r, t, train_jsonl='{"sentence": "a", "label": "pos"}\n'
                                                        + json.dumps({"sentence": "a" * 1_000_000, "label": "neg"})
                                                        + "\n")),
                            "train.jsonl line 2: over 1 MB of text"),
    # --out: never a user's folder, never the current or home folder
    "out is the current folder": (lambda r, t: train(t, _task(r, t))[:-1] + ["."], "--out . is the current folder"),
    "out is home": (lambda r, t: train(t, _task(r, t))[:-1] + ["~"], "is your home folder"),
    "out is above the current folder": (lambda r, t: train(t, _task(r, t))[:-1] + [os.path.dirname(os.getcwd())],
                                        "is a folder above the current or home folder"),
    "search out is the root": (lambda r, t: _search(r, t)[:-2] + ["--out", "/"], "--out / is a folder above"),
    "export out is home": (lambda r, t: ["export", "--storage", f"sqlite:///{r}/study/study.db", "--study-name",
                                         "autoplace-toy", "--out", os.path.expanduser("~"), "--overwrite"],
                           "is your home folder"),
}



def _search(root, tmp, space=None, storage=None, task=None):
    path = root / "space.yaml"
    if space is not None:
        path = tmp / "space.yaml"
        _write(path, space)
    args = ["search", "--task", task or str(root / "toy.yaml"), "--space", str(path), "--model", "tiny-gpt2",
            "--n-trials", "2", "--out", str(tmp / "out")]
    return args + (["--storage", storage] if storage else [])


def _predict(root, tmp, text):
    _write(tmp / "in.jsonl", text)
    return ["predict", str(root / "artifact"), "--input", str(tmp / "in.jsonl"), "--output", str(tmp / "out")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, trained, tmp_path, capsys):
    build, needle = CASES[case]
    args = build(trained, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("autoplace: error: "), err
    assert needle in err[0], err[0]
    assert "Traceback" not in err[0] and "hunter2" not in err[0]
    assert not (tmp_path / "out").exists()  # nothing half-written
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before


# -- --out: a user's files are never lost ------------------------------------------------------------------------
def _with_out(args, out):
    """args with the value after --out replaced."""
    i = args.index("--out") + 1
    return args[:i] + [str(out)] + args[i + 1:]


def _study_args(root, command, *extra):
    return [command, "--storage", f"sqlite:///{root}/study/study.db", "--study-name", "autoplace-toy", "--out", "x",
            *extra]


OUT_COMMANDS = {
    "train": lambda r, t: train(t, _task(r, t)),
    "search": lambda r, t: _search(r, t),
    "export": lambda r, t: _study_args(r, "export"),
    "export peft": lambda r, t: _study_args(r, "export", "--format", "peft"),
    "report": lambda r, t: _study_args(r, "report"),
}


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _one_line_error(capsys, args, needle):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("autoplace: error: "), (code, err)
    assert needle in err[0], err[0]


@pytest.mark.parametrize("command, overwrite", [(c, o) for c in OUT_COMMANDS for o in (False, True)
                                                if not (c == "search" and o)])  # search has no --overwrite
def test_out_never_replaces_a_users_folder(command, overwrite, trained, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "y.txt").write_text("more of mine")
    args = _with_out(OUT_COMMANDS[command](trained, tmp_path), mine) + (["--overwrite"] if overwrite else [])
    before, listing = _snapshot(mine), sorted(os.listdir(tmp_path))
    _one_line_error(capsys, args, f"--out {mine} holds notes.txt, which autoplace did not write")
    assert _snapshot(mine) == before and sorted(os.listdir(tmp_path)) == listing


def test_a_users_file_inside_an_autoplace_folder_is_never_replaced(trained, tmp_path, capsys):
    """A file the user put into an artifact folder makes it theirs: refused even with --overwrite, left intact."""
    art = pathlib.Path(_artifact(trained, tmp_path))
    (art / "notes.txt").write_text("my notes")
    before = _snapshot(art)
    args = _with_out(train(tmp_path, _task(trained, tmp_path)), art) + ["--overwrite"]
    _one_line_error(capsys, args, f"--out {art} holds notes.txt, which autoplace did not write")
    assert _snapshot(art) == before


def test_an_older_artifact_is_replaced_only_with_overwrite(trained, tmp_path, capsys):
    art = pathlib.Path(_artifact(trained, tmp_path))
    before = _snapshot(art)
    args = _with_out(train(tmp_path, _task(trained, tmp_path), template="[P:3] {sentence} It was [MASK]"), art)
    _one_line_error(capsys, args, f"--out {art} already holds an autoplace artifact folder; pass --overwrite")
    assert _snapshot(art) == before
    listing = sorted(os.listdir(tmp_path))
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((art / "template.json").read_text())["template"] == "[P:3] {sentence} It was [MASK]"
    assert sorted(os.listdir(tmp_path)) == listing  # replaced in place: no temporary or old folder left


def test_search_resumes_its_own_folder_but_refuses_an_artifact(trained, tmp_path, capsys):
    art = _artifact(trained, tmp_path)
    _one_line_error(capsys, _with_out(_search(trained, tmp_path), art), "is an autoplace artifact folder, not a search")
    study = tmp_path / "study"
    shutil.copytree(trained / "study", study)
    assert main(_with_out(_search(trained, tmp_path), study)) == 0  # the same search again: nothing new to do
    assert json.loads(capsys.readouterr().out)["trials"]["complete"] == 2


def test_report_writes_into_a_search_folder_only_with_overwrite(trained, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(trained / "study", study)
    (study / "report.md").unlink()
    args = _with_out(_study_args(trained, "report"), study)
    _one_line_error(capsys, args, f"--out {study} already holds an autoplace search folder; pass --overwrite")
    assert not (study / "report.md").exists()
    assert main(args + ["--overwrite"]) == 0
    assert (study / "report.md").is_file() and json.loads((study / ".autoplace.json").read_text())["kind"] == "search"


def test_predict_never_overwrites_a_file_without_overwrite(trained, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"sentence": "the movie was great"}\n')
    out = tmp_path / "preds.jsonl"
    out.write_text("keep me\n")
    args = ["predict", str(trained / "artifact"), "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]
    _one_line_error(capsys, args, f"--output {out} exists; pass --overwrite to replace it")
    assert out.read_text() == "keep me\n"
    assert main(args + ["--overwrite"]) == 0
    assert json.loads(out.read_text())["prediction"] in ("pos", "neg")
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "preds.jsonl"]


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_predict_on_an_empty_input_writes_an_empty_output_and_says_so(text, trained, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(text)
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(trained / "artifact"), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert out.read_text() == "" and len(err) == 1 and "has no examples; the output is empty" in err[0]


def _meta():
    return {"template": "[P:1] {sentence} [MASK]", "task": "toy", "model": "tiny-gpt2", "prompt": {}}


def test_a_crash_mid_write_leaves_the_older_artifact_whole(trained, tmp_path, monkeypatch):
    art = pathlib.Path(_artifact(trained, tmp_path))
    before, listing = _snapshot(art), sorted(os.listdir(tmp_path))

    def disk_full(tensors, path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(artifact, "save_file", disk_full)
    with pytest.raises(AutoplaceError, match=f"cannot write {art}: No space left on device"):
        artifact.save(art, {"w": torch.zeros(2)}, _meta())
    assert _snapshot(art) == before and sorted(os.listdir(tmp_path)) == listing


def test_a_failed_swap_puts_the_older_artifact_back(trained, tmp_path, monkeypatch):
    art = pathlib.Path(_artifact(trained, tmp_path))
    before, listing = _snapshot(art), sorted(os.listdir(tmp_path))
    rename = pathlib.Path.rename

    def failing(self, target):
        if pathlib.Path(target) == art and self.name != f".art.old-{os.getpid()}":  # the new folder's rename
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return rename(self, target)
    monkeypatch.setattr(pathlib.Path, "rename", failing)
    with pytest.raises(AutoplaceError, match="Input/output error"):
        artifact.save(art, {"w": torch.zeros(2)}, _meta())
    assert _snapshot(art) == before and sorted(os.listdir(tmp_path)) == listing


def test_every_command_that_reads_input_has_bad_input_cases(trained, tmp_path):
    """The cases run every subcommand that reads user input, so a command cannot go without them."""
    from autoplace.cli import build_parser
    commands = set(build_parser()._subparsers._group_actions[0].choices) - {"tasks", "dashboard"}
    run = set()
    for i, (build, _) in enumerate(CASES.values()):
        (tmp_path / str(i)).mkdir()
        run.add(build(trained, tmp_path / str(i))[0])
    assert run >= commands, sorted(commands - run)


def test_shared_data_is_beside_the_repo():
    assert (FEWGLUE / "CB" / "val.jsonl").is_file()
