from collections import Counter

import pytest
import torch

from autoplace.featurize import collate
from autoplace.errors import AutoplaceError
from autoplace.config import PromptConfig
from autoplace.pipeline import build
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.inference import evaluate
from autoplace.trainer import train
from conftest import SHARED_DATA, write_jsonl


@pytest.mark.parametrize("name, folder, sizes", [
    ("rte", "FewGLUE_32dev", (32, 32, 277)), ("nli", "FewGLUE_32dev", (32, 32, 277)),
    ("cb", "FewGLUE_32dev", (32, 32, 56)), ("boolq", "FewGLUE_32dev", (32, 32, 3270)),
    ("sentiment", "MR_snippets", (8066, 994, 1012)),
])
def test_builtin_tasks_read_their_folders(name, folder, sizes, fewglue):
    task = get_task(name)
    got = tuple(len(task.load_split(s, str(SHARED_DATA / folder))) for s in ("train", "dev", "test"))
    assert got == sizes
    ds = task.load_split("train", str(SHARED_DATA / folder))
    assert set(task.label_of(ex) for ex in ds) == set(task.labels)


def test_a_train_split_with_one_answer_is_named(caplog, toy_task_file):
    """FewGLUE's WSC train is 32 of 32 true: a prompt trained on such a split answers true always (the placement
    study's WSC column), so loading one says so, once; a train split with both answers, and other splits, load
    silently. (A custom task: built-in tasks keep their loaded splits across tests.)"""
    get_task(str(toy_task_file)).load_split("train")
    write_jsonl(toy_task_file.parent / "dev.jsonl", [{"sentence": s, "label": "pos"} for s in ("a", "b")])
    get_task(str(toy_task_file)).load_split("dev")
    assert "train examples have the answer" not in caplog.text
    write_jsonl(toy_task_file.parent / "train.jsonl", [{"sentence": s, "label": "pos"} for s in ("a", "b", "c")])
    task = get_task(str(toy_task_file))
    for split in ("train", "train", "dev"):
        task.load_split(split)
    assert caplog.text.count("autoplace: task toy: all 3 train examples have the answer 'pos'") == 1


def test_data_dir_may_be_the_data_root_or_the_env(monkeypatch, fewglue, tmp_path):
    assert len(get_task("cb").load_split("dev", str(SHARED_DATA))) == 32  # finds FewGLUE_32dev/CB
    monkeypatch.setenv("AUTOPLACE_DATA_DIR", str(fewglue))
    assert len(get_task("rte").load_split("dev")) == 32
    other = tmp_path / "RTE"  # another folder named by the env var: its data, not the splits read before
    other.mkdir()
    for name in ("train.jsonl", "dev32.jsonl"):
        write_jsonl(other / name, [{"premise": "p", "hypothesis": "h", "label": "entailment"}] * 3)
    monkeypatch.setenv("AUTOPLACE_DATA_DIR", str(tmp_path))
    assert len(get_task("rte").load_split("dev")) == 3


def test_no_data_dir_offline_names_data_dir(monkeypatch):
    monkeypatch.delenv("AUTOPLACE_DATA_DIR", raising=False)
    import datasets.config
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 would, without the wait
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AutoplaceError, match="pass --data-dir"):
        get_task("cb").load_split("train", None)


def test_hub_multirc_splits_train_and_dev_by_whole_question(monkeypatch):
    """The hub has no dev split: 10% of train's questions are held out, each with all its answer options, so exact
    match scores whole questions (the hub's rows are one option each). Other tasks keep a 10% split by row."""
    import datasets
    monkeypatch.delenv("AUTOPLACE_DATA_DIR", raising=False)
    rows = [{"paragraph": f"p{p}", "question": f"q{q}", "answer": f"a{a}", "label": (p + q + a) % 2,
             "idx": {"paragraph": p, "question": q, "answer": a}}
            for p in range(20) for q in range(3) for a in range(4)]  # 60 questions of 4 options
    hub = datasets.Dataset.from_list(rows)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, split: hub)
    task, rte = get_task("multirc"), get_task("rte")
    for builtin in (task, rte):  # the fake hub's splits must not outlive this test
        monkeypatch.setattr(builtin, "_splits", {})
    train, dev = task.load_split("train", None), task.load_split("dev", None)
    train_q, dev_q = Counter(train["question_id"]), Counter(dev["question_id"])
    assert len(dev_q) == 6 and not set(train_q) & set(dev_q) and len(train) + len(dev) == 240
    assert set(train_q.values()) == set(dev_q.values()) == {4}
    assert set(dev["label"]) <= {"false", "true"} and len(task.load_split("test", None)) == 240
    hub = datasets.Dataset.from_list([{"premise": f"p{i}", "hypothesis": "h", "label": i % 2, "idx": i}
                                      for i in range(50)])
    assert (len(rte.load_split("train", None)), len(rte.load_split("dev", None))) == (45, 5)


def test_custom_task_yaml_loads(toy_task_file):
    task = get_task(str(toy_task_file))
    assert task.name == "toy" and task.fields == ["sentence"] and task.labels == ["pos", "neg"]
    assert len(task.load_split("train")) == 32 and task.load_split("dev")[0]["sentence"].startswith("the movie")


def test_custom_csv_task(tmp_path):
    (tmp_path / "t.csv").write_text("text,y\nfine day,good\nawful day,bad\n")
    (tmp_path / "t.yaml").write_text('name: c\ndata_files: {train: t.csv, dev: t.csv}\nfields: [text]\n'
                                     'label_field: y\nverbalizer: {good: " yes", bad: " no"}\n'
                                     'template: "{text} [MASK]"\n')
    assert get_task(str(tmp_path / "t.yaml")).load_split("dev")["y"] == ["good", "bad"]


@pytest.mark.parametrize("body, message", [
    ("name: x\nfields: [a]\nverbalizer: {a: b, c: d}\ntemplate: '[MASK]'\n", "'data_files' is required"),
    ("name: x\ndata_files: {train: a.jsonl, dev: a.jsonl}\nfields: [a]\ntemplate: '[MASK]'\n",
     "'verbalizer' is required"),
    ("name: x\nkind: regression\n", "'kind' must be classification or cloze"),
    ("name: x\ncolour: red\n", "'colour' is not a known key"),
    ("name: [x\n", "not valid YAML"),
])
def test_bad_task_yaml_names_the_key(tmp_path, body, message):
    (tmp_path / "t.yaml").write_text(body)
    with pytest.raises(AutoplaceError, match=message):
        get_task(str(tmp_path / "t.yaml"))


def test_bad_data_names_file_line_and_label(tmp_path, toy_task_file):
    (toy_task_file.parent / "dev.jsonl").write_text('{"sentence": "a", "label": "pos"}\n{"sentence": "b", "lab\n')
    with pytest.raises(AutoplaceError, match=r"dev.jsonl line 2: broken JSON"):
        get_task(str(toy_task_file)).load_split("dev")
    write_jsonl(toy_task_file.parent / "test.jsonl", [{"sentence": "a", "label": "meh"}])
    with pytest.raises(AutoplaceError, match=r"split test, example 1: unknown label 'meh'"):
        get_task(str(toy_task_file)).load_split("test")
    write_jsonl(toy_task_file.parent / "train.jsonl", [{"text": "a", "label": "pos"}])
    with pytest.raises(AutoplaceError, match=r"field 'sentence' missing"):
        get_task(str(toy_task_file)).load_split("train")


def test_values_that_are_not_text_are_refused_unless_the_task_coerces_them(toy_task_file):
    from autoplace.cli import _read_jsonl
    rows = [{"sentence": 12, "label": "pos"}, {"sentence": None, "label": "neg"}, {"sentence": "a", "label": "pos"}]
    write_jsonl(toy_task_file.parent / "dev.jsonl", rows)
    with pytest.raises(AutoplaceError, match=r"split dev, example 1: field 'sentence' is a number, not text"):
        get_task(str(toy_task_file)).load_split("dev")
    with pytest.raises(AutoplaceError, match=r"dev.jsonl line 1: field 'sentence' is a number, not text"):
        _read_jsonl(str(toy_task_file.parent / "dev.jsonl"), get_task(str(toy_task_file)))
    toy_task_file.write_text(toy_task_file.read_text() + "coerce: true\n")
    task = get_task(str(toy_task_file))
    assert task.coerce and list(task.load_split("dev")["sentence"]) == ["12", "None", "a"]
    assert _read_jsonl(str(toy_task_file.parent / "dev.jsonl"), task)[1][2] == {"sentence": "None"}


def test_cloze_task_scores_p_at_1_over_the_vocabulary(tiny_gpt2, tmp_path):
    capitals = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", ["Tokyo", "Edo"])]
    write_jsonl(tmp_path / "d.jsonl", [{"input": c, "target": t} for c, t in capitals])
    (tmp_path / "lama.yaml").write_text('name: capitals\nkind: cloze\ndata_files: {train: d.jsonl, dev: d.jsonl}\n'
                                        'fields: [input]\ntarget_field: target\n'
                                        'template: "The capital of {input} is [MASK]"\n')
    task = get_task(str(tmp_path / "lama.yaml"))
    feat, model = build(task, tiny_gpt2, PromptConfig("[P:2] The capital of {input} is [P:2] [MASK]", encoder="none"))
    items = feat.encode_all(task.load_split("train"))
    assert len(items[3].targets) == 2
    assert model(**collate(items, 0)).shape == \
        (4, tiny_gpt2.vocab_size)
    result = train(model, task, items, items, TrainConfig(steps=150, batch_size=4, lr=5e-2, eval_every=50),
                   progress=False)
    assert sum(result.losses[-10:]) < sum(result.losses[:10])
    metrics, _ = evaluate(model, task, items)
    # p@1 recomputed here from the full-vocabulary scores; a hit on any acceptable answer ("Tokyo" or "Edo") counts
    with torch.no_grad():
        top = model.eval()(**collate(items, 0)).argmax(-1).tolist()
    hits = [top[i] in items[i].targets for i in range(4)]
    assert set(metrics) == {"p@1"} and metrics["p@1"] == sum(hits) / 4 and metrics["p@1"] > 0


def test_a_fixed_row_choice_keeps_groups_whole_and_never_exceeds_n():
    from autoplace.tasks.base import fixed_rows
    groups = ["q1"] * 3 + ["q2"] * 2 + ["q3"] * 4 + ["q4"]
    for n in range(1, 11):
        rows = fixed_rows(len(groups), n, groups)
        assert rows == sorted(rows) and rows == fixed_rows(len(groups), n, groups)  # in order, and the same each time
        kept = {groups[r] for r in rows}
        assert sorted(rows) == [r for r, g in enumerate(groups) if g in kept]  # each question wholly in or out
        assert len(rows) <= n or len(kept) == 1  # a question larger than n is kept alone rather than none
    assert len(fixed_rows(100, 10)) == 10 and fixed_rows(5, 10) == [0, 1, 2, 3, 4]
