"""Your own task searches out of the box: a space derived from the task's template, `autoplace space`, and the
position-effect picture."""
import json

import optuna
import pytest

from autoplace.cli import main
from autoplace.study.derive import skeleton_of
from autoplace.study.space import default_space_path
from conftest import synthetic_rows, write_jsonl

FAST = ["--model", "tiny-gpt2", "--n-trials", "5", "--steps", "2", "--eval-every", "1", "--pruner", "none"]


@pytest.mark.parametrize("template, skeleton", [
    ("{premise} Question: {hypothesis}? Answer: [MASK]",
     "<start> {premise} <after:premise> Question: {hypothesis}? <after:hypothesis> Answer: <before:answer> "
     "[MASK] <end>"),
    ("{sentence} It was [MASK]", "<start> {sentence} <after:sentence> It was <before:answer> [MASK] <end>"),
    ("{sentence}\nSentiment: [MASK]", "<start> {sentence} <after:sentence>\nSentiment: <before:answer> [MASK] <end>"),
    ("{input} [MASK]", "<start> {input} <after:input> [MASK] <end>"),
    ("Evidence: {evidence}\nClaim: {claim}\nSupported? [MASK]",
     "<start> Evidence: {evidence} <after:evidence>\nClaim: {claim} <after:claim>\nSupported? <before:answer> [MASK] "
     "<end>"),
])
def test_places_go_at_the_start_after_each_field_and_before_the_words_that_lead_to_the_answer(template, skeleton):
    assert skeleton_of(template, "t") == skeleton


def test_an_unknown_task_never_falls_back_to_another_tasks_space():
    assert default_space_path("vitaminc") is None and default_space_path("rte").name == "nli.yaml"


def _task(folder, name, fields, template, kind="classification"):
    rows = synthetic_rows(40, 0)
    if fields == ["evidence", "claim"]:
        rows = [{"evidence": r["sentence"], "claim": "the film was liked", "label": r["label"]} for r in rows]
    if kind == "cloze":
        rows = [{"input": r["sentence"].rsplit(" ", 1)[0] + " very", "target": r["sentence"].rsplit(" ", 1)[1]}
                for r in rows]
    for split, part in (("train", rows[:24]), ("dev", rows[24:32]), ("test", rows[32:])):
        write_jsonl(folder / f"{split}.jsonl", part)
    words = "" if kind == "cloze" else 'verbalizer: {pos: " yes", neg: " no"}\n'
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nkind: {kind}\ndata_files: {{train: train.jsonl, dev: dev.jsonl, test: test.jsonl}}\n"
        f"fields: {json.dumps(fields)}\n{words}template: {json.dumps(template)}\n")
    return folder / f"{name}.yaml"


@pytest.mark.parametrize("fields, template, kind", [
    (["evidence", "claim"], "{evidence} Claim: {claim}? Answer: [MASK]", "classification"),
    (["sentence"], "{sentence} It was [MASK]", "classification"),
    (["input"], "{input} [MASK]", "cloze"),
])
@pytest.mark.slow
def test_a_custom_task_searches_without_a_space(fields, template, kind, tmp_path, capsys):
    task = _task(tmp_path, "mine", fields, template, kind)
    out = tmp_path / "s"
    assert main(["search", "--task", str(task), "--out", str(out), *FAST]) == 0
    summary = json.loads(capsys.readouterr().out)
    derived = (out / "space.yaml").read_text()
    assert derived.startswith("# Search space derived from task mine's template")
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-mine")
    assert len(study.trials) == 5 and summary["trials"]["complete"] == 5
    assert ("calibrate" in derived) == (kind == "classification")
    assert (out / "position_effect.png").stat().st_size > 1000
    assert "![position effect](position_effect.png)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_the_printed_space_fed_back_gives_the_same_trials(tmp_path, capsys):
    task = _task(tmp_path, "mine", ["evidence", "claim"], "{evidence} Claim: {claim}? Answer: [MASK]")
    assert main(["space", "--task", str(task), "--model", "tiny-gpt2", "--out", str(tmp_path / "mine-space.yaml")]) == 0
    assert main(["search", "--task", str(task), "--out", str(tmp_path / "a"), *FAST]) == 0
    assert main(["search", "--task", str(task), "--space", str(tmp_path / "mine-space.yaml"),
                 "--out", str(tmp_path / "b"), *FAST]) == 0
    capsys.readouterr()
    runs = [optuna.load_study(storage=f"sqlite:///{tmp_path}/{d}/study.db", study_name="autoplace-mine").trials
            for d in "ab"]
    assert [t.params for t in runs[0]] == [t.params for t in runs[1]]
    assert [t.user_attrs["template"] for t in runs[0]] == [t.user_attrs["template"] for t in runs[1]]
    assert (tmp_path / "mine-space.yaml").read_text() == (tmp_path / "a" / "space.yaml").read_text()
    import yaml
    max_length = yaml.safe_load((tmp_path / "a" / "space.yaml").read_text())["budget"]["max_length"]
    assert 32 <= max_length <= 64  # measured from these short examples, not the default 256


@pytest.mark.parametrize("template, skeleton", [
    ("{premise}? [MASK], {hypothesis}",  # a masked-LM template that ends in a field
     "<start> {premise}? <after:premise> [MASK], <end> {hypothesis} <after:hypothesis>"),
    ("[MASK]: {sentence}", "<start> [MASK]: <end> {sentence} <after:sentence>"),
    ("[MASK] {sentence}.", "<start> [MASK] <end> {sentence}. <after:sentence>"),
    ("{a}{b} [MASK]", "<start> {a}{b} <after:b> [MASK] <end>"),  # glued fields stay glued
])
def test_a_template_that_ends_in_a_field_starts_with_the_answer_or_glues_fields(template, skeleton):
    from autoplace.study.space import Skeleton
    assert skeleton_of(template, "t") == skeleton
    assert Skeleton(skeleton, ()).manual_template == template  # the task's own template, unchanged


def test_a_masked_lm_template_that_ends_in_a_field_gets_a_space_and_searches(tmp_path, capsys):
    from autoplace.study.space import load_space
    from autoplace.tasks import get_task
    task = _task(tmp_path, "mine", ["evidence", "claim"], "{evidence}? [MASK], {claim}")
    assert main(["space", "--task", str(task), "--model", "tiny-bert", "--out", str(tmp_path / "space.yaml")]) == 0
    space = load_space(tmp_path / "space.yaml")
    space.check(get_task(str(task)))
    assert space.manual_template == "{evidence}? [MASK], {claim}"
    assert space.depths == ["input", "all", "late"]  # a derived space searches depth, as the shipped ones do
    assert main(["search", "--task", str(task), "--out", str(tmp_path / "s"), *FAST[2:], "--model", "tiny-bert"]) == 0
    capsys.readouterr()
    trials = optuna.load_study(storage=f"sqlite:///{tmp_path}/s/study.db", study_name="autoplace-mine").trials
    assert len(trials) == 5
