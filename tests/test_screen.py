"""The words as well as the places: phrasings and label words in the space, the zero-shot screen and automatic label
words."""
import dataclasses
import itertools
import json

import optuna
import pytest

from autoplace.cli import main
from autoplace.config import PromptConfig
from autoplace.study.report import screen_table
from autoplace.study.screen import screen
from autoplace.study.space import load_space
from autoplace.tasks import get_task
from autoplace.inference import evaluate, predict
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
    assert "2 of the 3 zero-shot reference trials run" in capsys.readouterr().err  # 8 trials: a quarter zero-shot
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    kept = study.user_attrs["screen"]["kept"]
    assert [w["key"] for w in study.user_attrs["words"]] == kept and len(kept) == 3
    zero_shot = [t for t in study.trials if t.user_attrs.get("reference") == "zero-shot"]
    assert [t.params["words"] for t in zero_shot] == kept[:2]  # the best kept candidates, zero-shot, best first
    assert sum(t.user_attrs["n_prompt_tokens"] > 0 for t in study.trials) >= 6  # most of the 8 trials train
    placed = [t for t in study.trials if t.user_attrs.get("reference") in ("start-only", "end-only", "mixed")]
    written_on = study.user_attrs["screen"]["references"]
    assert written_on["key"] == (kept[0] if written_on["word"] in ("best", "better", "not kept") else "t0.v0.raw")
    assert placed and all(t.params["words"] == written_on["key"] for t in placed)  # the references use its choice
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


def test_with_one_screened_candidate_the_references_use_its_phrasing(words_space, toy_task_file):
    """screen.keep 1 may keep the second phrasing: the placement references must then be written in its places."""
    from autoplace.study.space import Words
    space = load_space(words_space)
    space.words = {"t1.v0.raw": Words("t1.v0.raw", 1, {"pos": " yes", "neg": " no"}, False)}
    refs = dict(space.references(causal=True))
    assert refs["zero-shot"] == {}  # no `words` parameter when there is nothing to choose
    start = refs["start-only"]
    assert "t1:n_slots" in start and not any(k.startswith("t0:") for k in start)
    plan = space.plan_of(optuna.trial.create_trial(params=start, distributions=_distributions(space, start),
                                                   value=0.5), causal=True)
    assert plan.template == "[P:3] Review: {sentence}\nSentiment: [MASK]"  # total 4, clamped to the max length 3


def _screen_rows(task, right: dict[str, int], n: int = 64):
    """Kept rows, the screen's best first, and their answers on train ∪ dev (all labelled 0): the best right on the
    first right[key] examples, the others on the last, so that they disagree where a paired bootstrap can see it."""
    from autoplace.study.screen import Answer, Row
    own = "{sentence} It was [MASK]"
    rows = [Row("t1.v0.raw", "Review: {sentence}\nSentiment: [MASK]", dict(task.verbalizer), False),
            Row("t0.v0.raw", own, dict(task.verbalizer), False), Row("t0.v0.cf", own, dict(task.verbalizer), True)]
    items = [Answer(0) for _ in range(n)]
    for row in rows:
        row.both = right[row.key] / n
    answers = {key: [0] * k + [1] * (n - k) if key == rows[0].key else [1] * (n - k) + [0] * k
               for key, k in right.items()}
    return rows, {key: (answered, items) for key, answered in answers.items()}


def test_the_references_stay_on_the_tasks_own_template_unless_the_screens_best_beats_it(toy_task_file):
    """A lead of one example of 64 is noise: the placements go on the task's own template and words. A clear lead
    (60 against 30 right) moves them to the best; a calibrated copy of the template is not the task's own."""
    from autoplace.study.screen import reference_words
    task = get_task(str(toy_task_file))
    rows, predictions = _screen_rows(task, {"t1.v0.raw": 34, "t0.v0.raw": 33, "t0.v0.cf": 33})
    tied = reference_words(rows, predictions, task)
    assert (tied["key"], tied["word"], tied["best"], tied["own"]) == ("t0.v0.raw", "tied", "t1.v0.raw", "t0.v0.raw")
    assert tied["difference"] == pytest.approx(1 / 64) and tied["interval"][0] < 0 < tied["interval"][1]
    rows, predictions = _screen_rows(task, {"t1.v0.raw": 60, "t0.v0.raw": 30, "t0.v0.cf": 30})
    clear = reference_words(rows, predictions, task)
    assert (clear["key"], clear["word"]) == ("t1.v0.raw", "better") and clear["interval"][0] > 0
    assert reference_words([rows[0], rows[2]], predictions, task) == {  # only the calibrated copy was kept
        "key": "t1.v0.raw", "best": "t1.v0.raw", "own": None, "word": "not kept"}
    assert reference_words(rows[1:], predictions, task)["word"] == "best"
    for chosen, says in ((tied, "written on t0.v0.raw, the task's own template and words: the screen's best "
                                "(t1.v0.raw) is tied with it (+0.016 on train ∪ dev, 90% paired bootstrap interval"),
                         (clear, "written on t1.v0.raw, the screen's best: it beats the task's own template and "
                                 "words (t0.v0.raw) by +0.469")):
        record = {"rows": [], "kept": [], "examples": {"train": 32, "dev": 32}, "seconds": 1.0, "references": chosen}
        assert says in "\n".join(screen_table(record))


def test_the_placement_references_are_written_on_the_chosen_words(words_space):
    from autoplace.study.space import Words
    space = load_space(words_space)
    space.words = {"t1.v0.raw": Words("t1.v0.raw", 1, {"pos": " yes", "neg": " no"}, False),
                   "t0.v0.raw": Words("t0.v0.raw", 0, {"pos": " yes", "neg": " no"}, False)}
    assert dict(space.references(causal=True))["start-only"]["words"] == "t1.v0.raw"  # none chosen: the best
    space.reference_words = "t0.v0.raw"
    refs = space.references(causal=True)
    assert [p["words"] for name, p in refs if name == "zero-shot"] == ["t1.v0.raw", "t0.v0.raw"]
    placed = [p for name, p in refs if name != "zero-shot"]
    assert placed and all(p["words"] == "t0.v0.raw" and "t0:n_slots" in p for p in placed)
    plan = space.plan_of(optuna.trial.create_trial(params=placed[0], distributions=_distributions(space, placed[0]),
                                                   value=0.5), causal=True)
    assert plan.template == "[P:3] {sentence} It was [MASK]"  # start-only on the task's phrasing


def _distributions(space, params):
    """The distributions Optuna would record for these parameters (a FixedTrial replays them)."""
    trial = optuna.trial.FixedTrial(params)
    space.sample(trial, causal=True)
    return trial.distributions


def test_a_cloze_space_with_several_phrasings_is_screened_over_the_whole_vocabulary(tiny_gpt2, tmp_path):
    """A cloze task has no label words: each phrasing is scored by p@1 over the vocabulary. The targets are set to
    the first phrasing's own top tokens where a word reads back as that token, so its p@1 is known by hand; the
    second phrasing's must be what training's own evaluation gives for it unprompted."""
    from autoplace.pipeline import build
    countries = ["France", "Italy", "Spain", "Japan", "Peru", "Chile", "Egypt", "Kenya"]
    first, second = "The capital of {input} is [MASK]", "{input} has its capital in [MASK]"
    task_file = tmp_path / "lama.yaml"
    task_file.write_text('name: capitals\nkind: cloze\ndata_files: {train: d.jsonl, dev: d.jsonl}\n'
                         f'fields: [input]\ntarget_field: target\ntemplate: "{first}"\n')
    write_jsonl(tmp_path / "d.jsonl", [{"input": c, "target": "Paris"} for c in countries])

    def scored(template):
        task = get_task(str(task_file))
        featurizer, model = build(task, tiny_gpt2, PromptConfig(template, encoder="none", max_length=32))
        items = featurizer.encode_all(task.load_split("train"))
        return featurizer, predict(model, items).argmax(-1).tolist(), evaluate(model, task, items)[0]["p@1"]
    featurizer, top, _ = scored(first)
    words = [tiny_gpt2.tokenizer.decode([t]).strip() for t in top]
    targets = [w if w and featurizer.tokens(" " + w)[:1] == [t] else "zzqx" for w, t in zip(words, top)]
    hits = sum(t != "zzqx" for t in targets)
    assert hits >= 3
    write_jsonl(tmp_path / "d.jsonl", [{"input": c, "target": t} for c, t in zip(countries, targets)])
    assert scored(first)[2] == hits / 8
    (tmp_path / "space.yaml").write_text(
        'templates:\n  - "<start> The capital of {input} is <before:answer> [MASK]"\n'
        '  - "<start> {input} <after:input> has its capital in <before:answer> [MASK]"\n'
        "slots: {min: 1, max: 1}\nlength: {min: 2, max: 2}\nencoder: [none]\nlr: {low: 1.0e-2, high: 5.0e-2}\n"
        "budget: {steps: 2, eval_every: 1, batch_size: 4, max_length: 32}\n"
        "reference: {total_length: 2, lr: 0.01, encoder: none, init: vocab}\n")
    kept, record = screen(load_space(tmp_path / "space.yaml"), get_task(str(task_file)), tiny_gpt2, None)
    rows = {row["key"]: row for row in record["rows"]}
    assert set(rows) == {"t0.v0.raw", "t1.v0.raw"} and record["metric"] == "p@1"
    assert rows["t0.v0.raw"]["train"] == rows["t0.v0.raw"]["dev"] == hits / 8
    assert rows["t1.v0.raw"]["template"] == second and rows["t1.v0.raw"]["train"] == scored(second)[2] < hits / 8
    assert [w.key for w in kept] == ["t0.v0.raw", "t1.v0.raw"]


AUTO_SPACE = """
templates: ["<start> {sentence} <after:sentence> It was <before:answer> [MASK]"]
verbalizers: auto
screen: {keep: 2, examples: 64}
auto_verbalizer: {k: 5, n: 3}
budget: {steps: 2, eval_every: 1, batch_size: 8, max_length: 32}
"""


def _counting_scores(monkeypatch):
    """Every combination of automatic label words the screen scores, with its train accuracy."""
    from autoplace.study import screen as screen_module
    scored, score = [], screen_module._train_accuracy
    monkeypatch.setattr(screen_module, "_train_accuracy",
                        lambda logits, labels, combo: scored.append((combo, score(logits, labels, combo), logits,
                                                                     labels)) or scored[-1][1])
    return scored


def test_automatic_words_for_many_labels_score_a_bounded_number_of_combinations_and_say_so(tmp_path, tiny_gpt2,
                                                                                          monkeypatch):
    from autoplace.config import AUTO_COMBINATIONS
    names = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    rows = [{"sentence": f"the movie was {names[i % 10]} times {w}", "label": names[i % 10]}
            for i, w in enumerate(["good", "bad", "fine", "odd"] * 10)]
    for split in ("train", "dev", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    (tmp_path / "ten.yaml").write_text(
        "name: ten\nkind: classification\ndata_files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}\n"
        "fields: [sentence]\nverbalizer: {" + ", ".join(f'{n}: " {n}"' for n in names) + "}\n"
        'template: "{sentence} It was [MASK]"\n')
    (tmp_path / "space.yaml").write_text(AUTO_SPACE)
    scored = _counting_scores(monkeypatch)
    _, record = screen(load_space(tmp_path / "space.yaml"), get_task(str(tmp_path / "ten.yaml")), tiny_gpt2, None)
    searched = record["auto_words"]["t0"]
    assert searched["combinations"] == 5 ** 10 and searched["capped"] is True  # 9.8 million, not enumerated
    assert searched["considered"] == AUTO_COMBINATIONS and len(scored) == searched["scored"] <= AUTO_COMBINATIONS
    automatic = [r["verbalizer"] for r in record["rows"] if r["key"].startswith("t0.a")]
    assert len(automatic) == 3 and all(len(set(words.values())) == 10 for words in automatic)
    assert f"capped: only the {AUTO_COMBINATIONS} most probable were considered" in "\n".join(screen_table(record))


def test_automatic_words_for_two_labels_still_score_every_combination(toy_task_file, tmp_path, tiny_gpt2,
                                                                      monkeypatch):
    (tmp_path / "space.yaml").write_text(AUTO_SPACE)
    scored = _counting_scores(monkeypatch)
    _, record = screen(load_space(tmp_path / "space.yaml"), get_task(str(toy_task_file)), tiny_gpt2, None)
    assert record["auto_words"]["t0"] == {"per_class": 5, "classes": 2, "combinations": 25, "considered": 25,
                                          "scored": len(scored), "capped": False}
    # as before the cap: each class's 5 most probable whole words, every pair of them in order, the best 3 kept
    from autoplace.featurize import Featurizer
    from autoplace.pipeline import parse_for
    from autoplace.study.screen import whole_word_tokens
    task, (_, _, logits, labels) = get_task(str(toy_task_file)), scored[0]
    featurizer = Featurizer(parse_for(task, tiny_gpt2, "{sentence} It was [MASK]"), task, tiny_gpt2, 32)
    whole = whole_word_tokens(featurizer, logits.shape[-1])
    per_class = [logits.float().log_softmax(-1)[labels == c].mean(0).masked_fill(~whole, float("-inf"))
                 .topk(5).indices.tolist() for c in range(2)]
    assert [s[0] for s in scored] == [c for c in itertools.product(*per_class) if c[0] != c[1]]
    best = [s[0] for s in sorted(scored, key=lambda s: -s[1])[:3]]
    decode = tiny_gpt2.tokenizer.decode
    automatic = [r["verbalizer"] for r in record["rows"] if r["key"].startswith("t0.a")]
    assert automatic == [{"pos": decode([a]), "neg": decode([b])} for a, b in best]
    assert "all 25 were considered" in "\n".join(screen_table(record))


def test_the_screen_scores_whole_answers(tiny_gpt2, fewglue):
    """COPA's phrasings are screened with both candidates scored whole; no words, no calibration to choose."""
    from autoplace.study.screen import screen
    from autoplace.study.space import default_space_path, load_space
    space = load_space(default_space_path("copa"))
    space.screen_examples = 8
    kept, record = screen(space, get_task("copa"), tiny_gpt2, str(fewglue))
    assert [r["key"] for r in record["rows"]] == [f"t{t}.v0.raw" for t in range(4)]
    n = record["examples"]["train"]
    assert n == 8 and all(r["reason"] is None and abs(r["train"] * n - round(r["train"] * n)) < 1e-6
                          for r in record["rows"])  # each a share of the 8 screened train examples
    assert len(kept) == 4


def test_the_screen_ranks_multirc_by_its_selection_metric(tiny_gpt2, fewglue):
    """MultiRC's options are mostly wrong, so accuracy would favour words that always say no, and F1a words that
    always say yes; dev selects by the mean of F1a and EM, and so does the screen."""
    from autoplace.study.screen import screen
    from autoplace.study.space import default_space_path, load_space
    space = load_space(default_space_path("multirc"))
    space.screen_examples, space.budget = 12, dataclasses.replace(space.budget, max_length=64)
    task = get_task("multirc")
    kept, record = screen(space, task, tiny_gpt2, str(fewglue))
    assert record["metric"] == "f1a_em" == task.primary_metric
    scored = [r for r in record["rows"] if r["reason"] is None or r["key"] in record["kept"]]
    assert [r["both"] for r in sorted(scored, key=lambda r: -r["both"])][:len(kept)] == \
        [next(r["both"] for r in record["rows"] if r["key"] == key) for key in record["kept"]]
