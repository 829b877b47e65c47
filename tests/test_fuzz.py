"""Property tests: whatever text, YAML or JSON a user hands in, autoplace either accepts it or refuses it with an
AutoplaceError (one line at the CLI); no other exception escapes, and the CLI never prints a traceback.

Documents are generated near valid ones (known keys, plausible shapes) as well as at random, so the checks behind
the first key are reached too. Example counts are bounded so that the file runs in well under a minute.
"""
import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from autoplace.cli import _read_jsonl, main
from autoplace.errors import AutoplaceError
from autoplace.study.space import load_space
from autoplace.tasks import get_task
from autoplace.tasks.base import load_file
from autoplace.tasks.custom import load_task_file
from autoplace.template import parse, validate


def bounded(n):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def accepted(call, *args):
    """True when call succeeds, False when it refuses with an AutoplaceError; anything else fails the test."""
    try:
        call(*args)
    except AutoplaceError as exc:
        assert "\n" not in str(exc), str(exc)
        event(f"{call.__name__}: refused")  # --hypothesis-show-statistics shows how often each way was taken
        return False
    event(f"{call.__name__}: accepted")
    return True


# -- strategies ---------------------------------------------------------------------------------------------------
TEMPLATE_PIECES = ["{sentence}", "{premise}", "{ sentence }", "{}", "{", "}", "[MASK]", "[mask]", "[P]", "[P:3]",
                   "[P:0]", "[P:65]", "[P:x]", "[P:", "[", "]", " ", "\n", " It was ", "?"]
pieces = st.lists(st.one_of(st.sampled_from(TEMPLATE_PIECES), st.text(max_size=6)), max_size=10).map("".join)
fitting = st.lists(st.sampled_from(["[P]", "[P:2]", "[P:64]", " ", " It was", "?"]), max_size=4).map("".join)
templates = st.one_of(pieces, st.tuples(fitting, st.just("{sentence}"), fitting, st.just("[MASK]"), fitting | pieces)
                      .map("".join))  # the second mostly parses, so what comes after parsing is reached too

KEYS = ["name", "kind", "data_files", "fields", "label_field", "verbalizer", "template", "target_field", "metrics",
        "coerce", "description", "skeleton", "places", "slots", "length", "init", "encoder", "lr", "budget",
        "reference", "task", "min", "max", "low", "high", "log", "steps", "eval_every", "batch_size", "max_length",
        "total_length", "train", "dev", "test", "pos", "neg"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["classification", "cloze", "acc", "f1_macro", "lstm", "mlp", "none", "vocab",
                                     "random", "train.jsonl", "sentence", "[MASK]", "<start> {sentence} [MASK]"]))
edge_numbers = st.sampled_from([0, -1, 10**30, float("inf"), float("-inf"), float("nan")])
edge_values = edge_numbers | st.sampled_from(["", "3", [], {}])
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers()), inner, max_size=5)),
    max_leaves=12)

TASK = {"name": "toy", "kind": "classification", "data_files": {"train": "train.jsonl", "dev": "dev.jsonl"},
        "fields": ["sentence"], "verbalizer": {"pos": " yes", "neg": " no"}, "template": "{sentence} It was [MASK]"}
SPACE = {"skeleton": "<start> {sentence} <end> It was [MASK]",
         "places": ["start", "end"], "slots": {"min": 1, "max": 2},
         "length": {"min": 1, "max": 4}, "lr": {"low": 1e-3, "high": 1e-2, "log": True}, "init": ["vocab"],
         "encoder": ["none", "mlp"], "budget": {"steps": 4, "eval_every": 2}, "reference": {"total_length": 3}}


@st.composite
def near(draw, base):
    """base with a few keys dropped, given random values, or changed one level down (ranges, budgets)."""
    doc = dict(base)
    for key in draw(st.lists(st.sampled_from(list(base)) | st.sampled_from(KEYS[:21] + ["colour"]), min_size=1,
                             max_size=3)):
        change = draw(st.sampled_from(["drop", "replace", "inside", "inside"]))
        if change == "drop":
            doc.pop(key, None)
        elif change == "inside" and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], draw(st.sampled_from([*doc[key], "colour"])): draw(edge_numbers | scalars)}
        else:
            doc[key] = draw(edge_values | values)
    return doc


def yaml_documents(base):
    return st.one_of(near(base).map(yaml.safe_dump), values.map(yaml.safe_dump), st.text(max_size=60))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=10)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)
rows = st.dictionaries(st.sampled_from(["sentence", "label", "idx"]), st.one_of(
    json_values, st.sampled_from(["pos", "neg", "the movie was good"])), max_size=3)
good_rows = st.fixed_dictionaries({"sentence": st.text(max_size=10), "label": st.sampled_from(["pos", "neg"])})
json_line = st.one_of(good_rows.map(json.dumps), rows.map(json.dumps), json_values.map(json.dumps),
                      st.text(max_size=20), st.just(""))
json_files = st.one_of(st.lists(good_rows.map(json.dumps), min_size=1, max_size=4),
                       st.lists(json_line, max_size=6)).map("\n".join)


# -- properties ---------------------------------------------------------------------------------------------------
@bounded(400)
@given(text=st.one_of(templates, st.text()))
def test_template_parser_accepts_or_refuses(text):
    try:
        template = parse(text)
    except AutoplaceError:
        return
    for causal in (True, False):
        accepted(validate, template, ["sentence"], causal)


@pytest.mark.parametrize("loader, keys", [(load_task_file, TASK), (load_space, SPACE)], ids=["task", "space"])
@bounded(500)
@given(data=st.data())
def test_yaml_loaders_accept_or_refuse(loader, keys, data, tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text(data.draw(yaml_documents(keys)), encoding="utf-8")
    accepted(loader, path)


@bounded(30)
@given(text=json_files, coerce=st.booleans())
def test_data_reader_accepts_or_refuses(text, coerce, toy_task_file):
    data = toy_task_file.parent / "dev.jsonl"
    data.write_text(text, encoding="utf-8")
    accepted(load_file, "dev", data)
    task = get_task(str(toy_task_file))
    task.coerce = coerce
    if accepted(task.load_split, "dev"):
        assert all(isinstance(v, str) for v in task.load_split("dev")["sentence"])


@bounded(200)
@given(text=json_files, coerce=st.booleans())
def test_predict_reader_accepts_or_refuses(text, coerce, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(text, encoding="utf-8")
    try:
        examples = _read_jsonl(str(path), dataclasses.replace(get_task("mr"), fields=["sentence"], coerce=coerce))
    except AutoplaceError:
        event("refused")
        return
    event(f"accepted {'no' if not examples else 'some'} examples")
    assert all(isinstance(example["sentence"], str) for _, _, example in examples)


@bounded(10)
@given(text=templates)
def test_train_on_a_random_template_never_prints_a_traceback(text, toy_task_file, capsys):
    out = Path(tempfile.mkdtemp(dir=toy_task_file.parent)) / "out"
    code = main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", f"--template={text}", "--steps", "1",
                 "--eval-every", "1", "--batch-size", "4", "--max-length", "64", "--out", str(out)])
    err = capsys.readouterr().err
    event(f"train: exit {code}")
    assert code in (0, 2) and "Traceback" not in err, err
    assert code == 0 or (len(err.strip().splitlines()) == 1 and not out.exists()), err
