"""Answers of more than one token, choice tasks, and the four FewGLUE tasks that need them (COPA, WiC, WSC, MultiRC).

Whole-answer scores are checked against a brute-force computation: the full sequence run through the backbone, the
full-vocabulary log-softmax at every position, the answer's tokens summed (or averaged).
"""
import json
from collections import Counter

import datasets
import pytest
import torch

from autoplace.cli import main
from autoplace.featurize import NO_SLOT
from autoplace.config import PromptConfig
from autoplace.pipeline import build
from autoplace.tasks import get_task
from autoplace.tasks.base import Task
from autoplace.tasks.kinds import binary_f1, exact_match
from autoplace.inference import predict
from conftest import REPO, write_jsonl

WORDS = {"pos": " wonderful indeed", "neg": " not good at all"}  # several tokens each, sharing none first
ROWS = [{"sentence": "the movie was good fun", "label": "pos"}, {"sentence": "bad", "label": "neg"},
        {"sentence": "a long and rather dull evening at the pictures", "label": "neg"}]


class Rows:
    def __init__(self, rows):
        self.rows = rows

    def load(self, split, data_dir):
        return datasets.Dataset.from_list(self.rows)


def brute_force(model, backbone, item, answer_tokens, mean=False):
    """log p(answer | input) with nothing but the backbone's own forward over the whole sequence."""
    ids, slots = list(item.input_ids), list(item.slot_ids)
    if backbone.causal:  # the answer's tokens follow the answer position; the last is only predicted
        ids[item.answer + 1:item.answer + 1] = answer_tokens[:-1]
        slots[item.answer + 1:item.answer + 1] = [NO_SLOT] * (len(answer_tokens) - 1)
    else:  # one [MASK] per token, in place of the one
        ids[item.answer:item.answer + 1] = [backbone.tokenizer.mask_token_id] * len(answer_tokens)
        slots[item.answer:item.answer + 1] = [NO_SLOT] * len(answer_tokens)
    ids, slots = torch.tensor([ids]), torch.tensor([slots])
    with torch.no_grad():
        hidden = backbone.trunk(inputs_embeds=model.embed(ids, slots), attention_mask=torch.ones_like(ids))
        log_probs = backbone.head(hidden.last_hidden_state)[0].float().log_softmax(-1)
    total = sum(float(log_probs[item.answer + j, t]) for j, t in enumerate(answer_tokens))
    return total / len(answer_tokens) if mean else total


@pytest.mark.parametrize("scoring", ["full", "mean"])
def test_whole_answer_scores_match_a_brute_force_computation(tiny, scoring):
    task = Task("toy", "classification", ["sentence"], "{sentence} It was [MASK]", Rows(ROWS), verbalizer=WORDS,
                answer_scoring=scoring)
    template = "[P:2] {sentence} [P:2] It was [MASK]" + ("" if tiny.causal else " [P:1]")
    featurizer, model = build(task, tiny, PromptConfig(template, encoder="mlp", init="random", seed=3))
    items = featurizer.encode_all(task.load_split("train"))
    scores = predict(model, items, batch_size=2)
    words = [featurizer.tokens(w) for w in WORDS.values()]
    assert all(len(w) > 1 for w in words)
    expected = torch.tensor([[brute_force(model, tiny, it, w, scoring == "mean") for w in words] for it in items])
    assert scores.shape == (len(ROWS), 2)
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)


def test_cached_and_uncached_whole_answer_scores_agree(tiny_gpt2):
    """The prefix cache (text before the first slot, shared by an example's candidate rows) changes nothing."""
    task = Task("toy", "classification", ["sentence"], "{sentence} It was [MASK]", Rows(ROWS), verbalizer=WORDS,
                answer_scoring="full")
    featurizer, model = build(task, tiny_gpt2, PromptConfig("{sentence} [P:3] It was [MASK]", encoder="lstm"))
    items = featurizer.encode_all(task.load_split("train"))
    tiny_gpt2.prefix_cache.clear()
    cached = predict(model, items)
    assert tiny_gpt2.prefix_cache.store, "the cache was not used"
    model.use_prefix_cache = False
    assert torch.allclose(cached, predict(model, items), atol=1e-5)


def test_a_choice_task_scores_each_examples_own_candidates(tiny_gpt2):
    rows = [{"premise": "It rained.", "a": "The street got wet.", "b": "The sun shone.", "c": "Cats.", "label": 0},
            {"premise": "He ran.", "a": "He was late.", "b": "He slept.", "c": "", "label": 1}]
    task = Task("pick", "choice", ["premise"], "{premise} So [MASK]", Rows(rows), choices=["a", "b", "c"])
    featurizer, model = build(task, tiny_gpt2, PromptConfig("[P:2] {premise} So [MASK]", encoder="mlp"))
    items = featurizer.encode_all(task.load_split("train"))
    assert [it.candidates[2] is None for it in items] == [False, True]  # the second has two candidates
    scores = predict(model, items)
    for it, row in zip(items, scores):
        for k, candidate in enumerate(it.candidates):
            expected = float("-inf") if candidate is None else brute_force(model, tiny_gpt2, it, candidate.tokens)
            assert row[k] == pytest.approx(expected, abs=1e-4)
    assert [it.label for it in items] == [0, 1]
    probs = task.kind.describe(task, scores[1], tiny_gpt2.tokenizer)["scores"]
    assert len(probs) == 3 and probs[2] == 0 and sum(probs) == pytest.approx(1, abs=1e-5)  # indexed as the fields


def test_multirc_f1a_and_em_match_a_hand_computation():
    """Two questions: q1 has options (right, wrong, right), q2 has (wrong, right)."""
    task = get_task("multirc")
    true, false = task.labels.index("true"), task.labels.index("false")

    class Item:
        def __init__(self, label, group):
            self.label, self.group = label, group
    items = [Item(true, "q1"), Item(false, "q1"), Item(true, "q1"), Item(false, "q2"), Item(true, "q2")]
    predicted = [true, true, true, false, true]  # q1: one false positive; q2: all right
    # by hand: TP 3 (q1a, q1c, q2b), FP 1 (q1b), FN 0 -> precision 3/4, recall 1, F1 = 2*3/(2*3+1) = 6/7
    scores = task.score(predicted, items)
    assert scores["f1a"] == pytest.approx(6 / 7)
    assert scores["em"] == pytest.approx(1 / 2)  # q2 exactly right, q1 not
    assert scores["acc"] == pytest.approx(4 / 5)
    assert scores["f1a_em"] == pytest.approx((6 / 7 + 1 / 2) / 2)  # SuperGLUE's MultiRC score
    assert task.primary_metric == "f1a_em"
    always_right = task.score([true] * 5, items)  # F1a alone rewards answering "right" to every option
    assert always_right["f1a"] > scores["f1a"] - 0.15 and always_right["f1a_em"] < scores["f1a_em"]
    assert binary_f1(torch.tensor([False]).numpy(), torch.tensor([True]).numpy()) == 0.0
    assert exact_match(torch.tensor([True, True]).numpy(), ["a", "b"]) == 1.0


def test_fewglue_nested_files_are_flattened_with_their_grouping(fewglue):
    multirc = get_task("multirc").load_split("train", str(fewglue))
    lines = [json.loads(line) for line in (fewglue / "MultiRC" / "train.jsonl").open()]
    n_options = sum(len(q["answers"]) for line in lines for q in line["passage"]["questions"])
    n_questions = sum(len(line["passage"]["questions"]) for line in lines)
    assert len(multirc) == n_options and len(set(multirc["question_id"])) == n_questions
    assert set(multirc["label"]) == {"true", "false"}
    wsc = get_task("wsc").load_split("train", str(fewglue))
    first = json.loads((fewglue / "WSC" / "train.jsonl").open().readline())
    assert wsc[0]["noun"] == first["target"]["span1_text"] and wsc[0]["pronoun"] == first["target"]["span2_text"]
    assert f"*{first['target']['span2_text']}*" in wsc[0]["text"]  # the pronoun is marked where the index says


def test_a_custom_choice_task_trains_searches_and_predicts(tmp_path, capsys):
    rows = [{"premise": f"Event {i}.", "a": "It went well." if i % 2 else "It went badly.",
             "b": "It went badly." if i % 2 else "It went well.", "label": i % 2} for i in range(12)]
    write_jsonl(tmp_path / "c.jsonl", rows)
    (tmp_path / "pick.yaml").write_text(
        "name: pick\nkind: choice\nanswer_scoring: mean\ndata_files: {train: c.jsonl, dev: c.jsonl, test: c.jsonl}\n"
        "fields: [premise]\nchoices: [a, b]\ntemplate: \"{premise} So [MASK]\"\n")
    assert main(["search", "--task", str(tmp_path / "pick.yaml"), "--model", "tiny-gpt2", "--n-trials", "3",
                 "--steps", "2", "--max-length", "32", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["test"]) == {"acc"}
    meta = json.loads((tmp_path / "run" / "best" / "template.json").read_text())
    assert meta["task"] == "pick"
    write_jsonl(tmp_path / "in.jsonl", [{"premise": "Rain.", "a": "Wet.", "b": "Dry."}])
    assert main(["predict", str(tmp_path / "run" / "best"), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl")]) == 0
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["prediction"] in (0, 1) and sum(line["scores"]) == pytest.approx(1, abs=1e-4)


# -- on the real backbone ------------------------------------------------------------------------------------------
FOLDERS = {"copa": "COPA", "wic": "WiC", "wsc": "WSC", "multirc": "MultiRC"}


@pytest.fixture(scope="module")
def smollm2():
    from autoplace.backbones import load_backbone
    return load_backbone("smollm2-135m", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FOLDERS))
def test_train_and_eval_on_smollm2(name, smollm2, fewglue, tmp_path, capsys):
    """Each new task trains and scores on the real backbone, on the first lines of each FewGLUE file (kept short: a
    MultiRC line is a passage with all its questions and their options, a few dozen examples)."""
    folder = tmp_path / FOLDERS[name]
    folder.mkdir()
    for file in ("train.jsonl", "dev32.jsonl", "val.jsonl"):
        lines = (fewglue / FOLDERS[name] / file).read_text().splitlines(keepends=True)
        (folder / file).write_text("".join(lines[:1 if name == "multirc" else 6]))
    template = "[P:2] " + get_task(name).template
    assert main(["train", "--task", name, "--model", "smollm2-135m", "--data-dir", str(tmp_path), "--template",
                 template, "--steps", "3", "--eval-every", "3", "--batch-size", "4", "--max-length", "128",
                 "--out", str(tmp_path / "art")]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", str(tmp_path / "art"), "--split", "test"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = {"multirc": {"f1a_em", "f1a", "em", "acc"}}.get(name, {"acc"})
    assert set(trained["test"]) == metrics
    if name != "multirc":  # a share of the 6 test examples written above
        assert abs(trained["test"]["acc"] * 6 - round(trained["test"]["acc"] * 6)) < 1e-6
    assert {k: scored[k] for k in metrics} == pytest.approx(trained["test"])  # eval re-scores what train reported


@pytest.mark.slow
def test_copa_search_on_smollm2_exports_what_predict_uses(smollm2, fewglue, tmp_path, capsys):
    out = tmp_path / "copa"
    assert main(["search", "--task", "copa", "--data-dir", str(fewglue), "--n-trials", "4", "--steps", "4",
                 "--max-length", "96", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    val = len((fewglue / "COPA" / "val.jsonl").read_text().splitlines())
    assert (summary["done"] == "4 of 4"
            and abs(summary["test"]["acc"] * val - round(summary["test"]["acc"] * val)) < 1e-6)
    rows = [json.loads(line) for line in (fewglue / "COPA" / "val.jsonl").read_text().splitlines()[:4]]
    write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["predict", str(out / "best"), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "pred.jsonl")]) == 0
    predictions = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["idx"] for r in rows]
    assert all(p["prediction"] in (0, 1) and len(p["scores"]) == 2 for p in predictions)
    meta = json.loads((out / "best" / "template.json").read_text())
    assert meta["template"] == summary["template"] and meta["task"] == "copa"


def test_the_built_in_spaces_are_found_from_a_plain_checkout_too(monkeypatch):
    """Installed (or editable), the spaces come from the package; a checkout on PYTHONPATH has them beside it."""
    import importlib.resources
    from autoplace.study import space
    assert (space.shipped_spaces() / "copa.yaml").is_file()

    def not_installed(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", not_installed)
    assert space.shipped_spaces() == REPO / "search_spaces" and (space.shipped_spaces() / "nli.yaml").is_file()


def test_cross_validation_folds_keep_the_columns_scoring_needs(fewglue):
    """MultiRC's folds keep question_id (exact match groups by it); a choice task's keep its candidates."""
    from autoplace.study.winner import fold_tasks
    for name, needed in (("multirc", "question_id"), ("copa", "choice2")):
        folds = fold_tasks(get_task(name), str(fewglue), 2, 0)
        held = folds[0].load_split("dev", str(fewglue))
        assert needed in held.column_names and len(held) > 0


def test_multirc_folds_and_screen_subsets_keep_whole_questions(fewglue):
    """Exact match needs every option of a question: folds and screen subsets split between questions, never
    inside one, and a train and a dev question are never merged by a shared id."""
    from autoplace.study.screen import _subset
    from autoplace.study.winner import fold_tasks
    task = get_task("multirc")
    pooled = {split: task.load_split(split, str(fewglue)) for split in ("train", "dev")}
    sizes = {f"{split}/{q}": n for split, part in pooled.items()
             for q, n in Counter(part["question_id"]).items()}
    folds = fold_tasks(task, str(fewglue), 3, 0)
    held = [Counter(fold.load_split("dev", str(fewglue))["question_id"]) for fold in folds]
    assert sum(len(h) for h in held) == len(sizes)  # every question is held out exactly once
    for h in held:
        assert all(n == sizes[q] for q, n in h.items())  # and whole
    subset = _subset(pooled["train"], 40, "question_id")
    counts, full = Counter(subset["question_id"]), Counter(pooled["train"]["question_id"])
    assert 0 < len(subset) <= 40 and all(n == full[q] for q, n in counts.items())
