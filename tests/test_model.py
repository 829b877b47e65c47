import dataclasses
import math

import pytest
import torch

from autoplace.featurize import NO_SLOT, collate
from autoplace.errors import AutoplaceError
from autoplace.config import PromptConfig
from autoplace.pipeline import build
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.inference import evaluate, predict
from autoplace.trainer import dev_steps, train

EXAMPLE = {"sentence": "the movie was good", "label": "pos"}


def _build(task_file, backbone, template, encoder="none", **kw):
    task = get_task(str(task_file))
    return task, *build(task, backbone, PromptConfig(template, encoder=encoder, **kw))


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("template, layout", [
    ("[P:3] {sentence} It was [MASK]", [("P", 3), ("f", " the movie was good"), ("t", " It was")]),
    ("{sentence} [P:2] It was [MASK]", [("f", "the movie was good"), ("P", 2), ("t", " It was")]),
    ("{sentence} It was [P:4] [MASK]", [("f", "the movie was good"), ("t", " It was"), ("P", 4)]),
    ("[P:1] {sentence} [P:2] It was [P:3] [MASK]",
     [("P", 1), ("f", " the movie was good"), ("P", 2), ("t", " It was"), ("P", 3)]),
])
def test_prompt_vectors_land_exactly_at_slot_positions(tiny, toy_task_file, template, layout):
    task, feat, model = _build(toy_task_file, tiny, template)
    tok, emb = tiny.tokenizer, tiny.embeddings.weight
    with torch.no_grad():
        model.encoder.input.copy_(torch.randn_like(model.encoder.input))  # distinct from every token row
    prompts = model.encoder().detach()
    # hand-built: special prefix, then the layout piece by piece, then [MASK] (masked LM) and special suffix
    rows, next_p, ids = [], 0, []
    for kind, value in layout:
        if kind == "P":
            rows += [prompts[next_p + i] for i in range(value)]
            next_p += value
            ids += [tok.pad_token_id] * value
        else:
            piece = _ids(tok, value)
            rows += [emb[i] for i in piece]
            ids += piece
    if not tiny.causal:
        rows.append(emb[tok.mask_token_id])
        ids.append(tok.mask_token_id)
    prefix, suffix = feat.prefix, feat.suffix
    rows = [emb[i] for i in prefix] + rows + [emb[i] for i in suffix]
    expected = torch.stack(rows)

    item = feat.encode(EXAMPLE)
    assert item.input_ids == prefix + ids + suffix
    batch = collate([item], tok.pad_token_id)
    got = model.embed(batch["input_ids"], batch["slot_ids"])[0].detach()
    assert torch.equal(got, expected)
    slot_positions = [i for i, s in enumerate(item.slot_ids) if s != NO_SLOT]
    assert [item.slot_ids[i] for i in slot_positions] == list(range(model.encoder.n_tokens))
    answer = len(prefix) + len(ids) - 1  # causal: last input token; masked: the [MASK] itself
    assert item.answer == answer
    if not tiny.causal:
        assert item.input_ids[item.answer] == tok.mask_token_id


def test_lean_scores_equal_full_model_logits_at_answer(tiny, toy_task_file):
    task, feat, model = _build(toy_task_file, tiny, "[P:2] {sentence} It was [P:2] [MASK]")
    items = [feat.encode(EXAMPLE), feat.encode({"sentence": "a much longer sentence than the other one", "label": "neg"})]
    batch = collate(items, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        lean = model(**batch)
        embeds = model.embed(batch["input_ids"], batch["slot_ids"])
        full = tiny.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    expected = full[torch.arange(2), batch["answer"]][:, feat.label_ids]
    assert lean.shape == (2, 2)
    torch.testing.assert_close(lean, expected, rtol=1e-4, atol=1e-5)


def test_truncation_shortens_fields_only_and_keeps_slots_and_mask(tiny, toy_task_file):
    task, feat, model = _build(toy_task_file, tiny, "[P:3] {sentence} It was [P:2] [MASK]", max_length=16)
    long = {"sentence": " ".join(["word"] * 200), "label": "pos"}
    item = feat.encode(long)
    assert len(item.input_ids) == 16
    assert sum(s != NO_SLOT for s in item.slot_ids) == 5
    tail = _ids(tiny.tokenizer, " It was")
    if tiny.causal:
        assert item.input_ids[-2 - len(tail):-2] == tail and item.answer == 15
    else:
        assert item.input_ids[item.answer] == tiny.tokenizer.mask_token_id


def test_truncation_cuts_the_longest_field_first(tiny_gpt2, tmp_path):
    from conftest import write_jsonl
    write_jsonl(tmp_path / "d.jsonl", [{"a": "x " * 100, "b": "y y y", "label": "p"}])
    (tmp_path / "t.yaml").write_text('name: two\ndata_files: {train: d.jsonl, dev: d.jsonl}\nfields: [a, b]\n'
                                     'verbalizer: {p: " yes", n: " no"}\ntemplate: "{a} {b} [MASK]"\n')
    task = get_task(str(tmp_path / "t.yaml"))
    feat, _ = build(task, tiny_gpt2, PromptConfig("{a} | {b} [MASK]", max_length=20))
    item = feat.encode({"a": "x " * 100, "b": "y y y"})
    assert len(item.input_ids) == 20
    assert item.input_ids[-3:] == _ids(tiny_gpt2.tokenizer, " y y y")  # the short field is whole


def test_multi_token_label_words_score_their_first_token(tiny_gpt2, tmp_path):
    from conftest import write_jsonl
    write_jsonl(tmp_path / "d.jsonl", [{"s": "x", "label": "a"}])
    (tmp_path / "t.yaml").write_text('name: mt\ndata_files: {train: d.jsonl, dev: d.jsonl}\nfields: [s]\n'
                                     'verbalizer: {a: " xylophonically", b: " no"}\ntemplate: "{s} [MASK]"\n')
    task = get_task(str(tmp_path / "t.yaml"))
    feat, _ = build(task, tiny_gpt2, PromptConfig("{s} [MASK]"))
    word = _ids(tiny_gpt2.tokenizer, " xylophonically")
    assert len(word) == 3 and feat.label_ids == [word[0], _ids(tiny_gpt2.tokenizer, " no")[0]]
    (tmp_path / "t.yaml").write_text('name: mt2\ndata_files: {train: d.jsonl, dev: d.jsonl}\nfields: [s]\n'
                                     'verbalizer: {a: " unbelievable", b: " unbelievableness"}\n'
                                     'template: "{s} [MASK]"\n')
    with pytest.raises(AutoplaceError, match="share a first token"):
        build(get_task(str(tmp_path / "t.yaml")), tiny_gpt2, PromptConfig("{s} [MASK]"))


@pytest.mark.parametrize("encoder", ["none", "mlp", "lstm"])
def test_only_prompt_gets_gradients_backbone_unchanged_and_loss_falls(tiny, toy_task_file, encoder):
    task, feat, model = _build(toy_task_file, tiny, "[P:2] {sentence} [P:2] It was [P:2] [MASK]", encoder=encoder)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    items = feat.encode_all(task.load_split("train"))
    batch = collate(items, tiny.tokenizer.pad_token_id)

    torch.nn.functional.cross_entropy(model(**batch), batch["label"]).backward()
    assert all(p.grad is None for p in tiny.model.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.encoder.input.grad.abs().sum() > 0
    model.encoder.zero_grad()
    dev = feat.encode_all(task.load_split("dev"))
    result = train(model, task, items, dev, TrainConfig(steps=100, batch_size=16, lr=3e-2, eval_every=20),
                   progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert result.steps_done == 100 and result.dev["acc"] >= 0.75  # generalises to unseen dev sentences
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in tiny.model.parameters())


def test_callback_can_stop_training(tiny_gpt2, toy_task_file):
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]")
    items = feat.encode_all(task.load_split("train"))
    seen = []
    result = train(model, task, items, items, TrainConfig(steps=50, eval_every=5),
                   callback=lambda step, score: seen.append(step) or step < 10, progress=False)
    assert seen == [5, 10] and result.stopped_early and result.steps_done == 10


def test_dev_is_scored_every_eval_every_steps_and_at_the_last():
    assert dev_steps(12, 3) == [3, 6, 9, 12]
    assert dev_steps(12, 5) == [5, 10, 12]
    assert dev_steps(4, 4) == [4]


def test_callback_sees_every_dev_step_when_nothing_stops_it(tiny_gpt2, toy_task_file):
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]")
    items = feat.encode_all(task.load_split("train"))
    seen = []
    result = train(model, task, items, items, TrainConfig(steps=12, eval_every=5),
                   callback=lambda step, score: seen.append(step) or True, progress=False)
    assert seen == [5, 10, 12] == [step for step, _ in result.history] and not result.stopped_early


def test_template_without_slots_is_scored_zero_shot(tiny_gpt2, toy_task_file):
    task, feat, model = _build(toy_task_file, tiny_gpt2, "{sentence} It was [MASK]", encoder="lstm")
    items = feat.encode_all(task.load_split("dev"))
    result = train(model, task, items, items, TrainConfig(steps=10), progress=False)
    assert result.steps_done == 0 and result.dev == evaluate(model, task, items)[0]


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_encoder_weights_depend_on_the_seed_only(tiny_gpt2, toy_task_file, encoder):
    template = "[P:2] {sentence} It was [MASK]"
    first = _build(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=3)[2].encoder.state_dict()
    torch.rand(1000)  # whatever ran before must not change a seeded prompt
    again = _build(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=3)[2].encoder.state_dict()
    other = _build(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=4)[2].encoder.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    # the layers themselves (not the seeded input vectors, not the zero-initialised last MLP layer) follow the seed
    layers = [k for k in first if k != "input" and not k.startswith("mlp.2.")]
    assert layers and all(not torch.equal(first[k], other[k]) for k in layers)


def test_prompt_gradients_are_the_same_every_time(tiny_gpt2, toy_task_file):
    """Placing the prompt vectors must have a backward that sums in a fixed order: an indexed gather's backward
    accumulates in thread order on CPU (at this size its gradients differed between identical calls), so a seed
    did not reproduce a run."""
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:3] {sentence} [P:3] It was [MASK]")
    generator = torch.Generator().manual_seed(0)
    slot_ids = torch.randint(-1, 6, (64, 256), generator=generator)  # -1: no slot
    input_ids = torch.randint(0, 100, (64, 256), generator=generator)
    weight = torch.randn(64, 256, tiny_gpt2.hidden_size, generator=generator)
    grads = []
    for _ in range(5):
        model.encoder.zero_grad()
        (model.embed(input_ids, slot_ids) * weight).sum().backward()
        grads.append(model.encoder.input.grad.clone())
    assert grads[0].abs().sum() > 0 and all(torch.equal(grads[0], g) for g in grads[1:])


def test_bf16_precision_runs_the_frozen_forward_in_bf16_and_keeps_prompts_fp32(toy_task_file):
    from autoplace.backbones import load_backbone
    fp32, bf16 = load_backbone("tiny-gpt2", "cpu"), load_backbone("tiny-gpt2", "cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and fp32.model is bf16.model  # one loaded copy
    scores = {}
    for backbone in (fp32, bf16):
        task, feat, model = _build(toy_task_file, backbone, "[P:2] {sentence} It was [MASK]", encoder="mlp")
        items = feat.encode_all(task.load_split("train"))
        seen = []
        hook = backbone.trunk.h[0].attn.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
        result = train(model, task, items, items, TrainConfig(steps=4, eval_every=2), progress=False)
        hook.remove()
        assert math.isfinite(result.losses[-1]) and model.encoder.input.dtype == torch.float32
        assert set(seen) == {torch.bfloat16 if backbone is bf16 else torch.float32}
        scores[backbone.precision] = evaluate(model, task, items)[0]["acc"]
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.25  # same prompts learned, up to bf16 rounding


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_once(has_bf16, monkeypatch, capsys):
    from autoplace import backbones
    monkeypatch.setattr(backbones, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(backbones, "_WARNED", set(), raising=False)  # as in a fresh process
    capsys.readouterr()
    for precision in ("bf16", "bf16", "fp32", "auto"):  # a search loads its backbone more than once
        backbones.load_backbone("tiny-gpt2", "cpu", precision=precision)
    lines = capsys.readouterr().err.splitlines()
    if has_bf16:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("autoplace: precision bf16 on a CPU without bf16 instructions")
        assert "avx512_bf16" in lines[0] and "amx_bf16" in lines[0] and "fp32 is likely faster" in lines[0]


def test_unknown_precision_is_refused():
    from autoplace.backbones import load_backbone
    with pytest.raises(AutoplaceError, match="precision 'fp8'"):
        load_backbone("tiny-gpt2", "cpu", precision="fp8")


DEV_STEPS, DEV_SCORES = [2, 4, 6, 8, 10], [0.5, 0.75, 0.875, 0.625, 0.5]  # dev rises, peaks at step 6, then falls


@pytest.mark.parametrize("calibrate", [False, True], ids=["raw", "calibrated"])
def test_dev_selects_the_kept_prompt_when_dev_rises_then_falls(tiny_gpt2, toy_task_file, monkeypatch, calibrate):
    """Dev selects: with dev scores that rise and then fall, training keeps the prompt of the best dev step (not the
    last one), reports that step and its score, and a calibrated prompt divides by the content-free prior of the
    prompt it kept. The dev scores are scripted; the prompt is really trained, and snapshotted at every dev step."""
    from autoplace import trainer
    from autoplace.inference import refresh_calibration
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [P:2] [MASK]", encoder="mlp",
                               calibrate=calibrate)
    refresh_calibration(model)
    items = feat.encode_all(task.load_split("train"))
    scripted, snapshots = iter(DEV_SCORES), []

    def scripted_dev(model, task, items, batch_size=32):
        snapshots.append({k: v.detach().clone() for k, v in model.encoder.state_dict().items()})
        return {task.primary_metric: next(scripted)}, []

    monkeypatch.setattr(trainer, "evaluate", scripted_dev)
    result = train(model, task, items, items, TrainConfig(steps=10, eval_every=2, lr=0.05), progress=False)
    assert result.history == list(zip(DEV_STEPS, DEV_SCORES)) and result.steps_done == 10
    assert result.best_step == 6 and result.dev == {task.primary_metric: 0.875}
    kept, best, last = model.encoder.state_dict(), snapshots[DEV_STEPS.index(6)], snapshots[-1]
    assert all(torch.equal(kept[k], best[k]) for k in kept)  # the prompt as it was at step 6, bit for bit
    assert not all(torch.equal(best[k], last[k]) for k in best)  # and it kept moving after step 6
    if calibrate:
        prior = predict(model, model.content_free, calibrated=False).softmax(-1).mean(0).log()
        torch.testing.assert_close(model.log_prior, prior)


def test_the_optimizer_holds_the_prompt_and_nothing_of_the_backbone(tiny_gpt2, toy_task_file, monkeypatch):
    """The backbone is frozen: the optimizer is given the prompt's parameters only, so it keeps no state on the
    backbone's."""
    optimizers, real = [], torch.optim.AdamW

    def spy(*args, **kwargs):
        optimizers.append(real(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items = feat.encode_all(task.load_split("train"))
    train(model, task, items, items[:8], TrainConfig(steps=3, eval_every=3), progress=False)
    (optimizer,) = optimizers
    prompt = {id(p) for p in model.encoder.parameters()}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == prompt and optimizer.state and {id(p) for p in optimizer.state} <= prompt
    assert not held & {id(p) for p in tiny_gpt2.model.parameters()}


def test_two_runs_of_one_seed_give_the_same_prompt(tiny_gpt2, toy_task_file):
    """A seed reproduces a run: the starting vectors, the encoder's layers and the batch order all follow it, so two
    runs of one seed give the same losses and the same prompt, bit for bit, whatever ran before them."""
    runs = []
    for _ in range(2):
        torch.rand(1000)  # the global random state differs between the two runs
        task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [P:2] [MASK]", encoder="lstm",
                                   seed=5)
        items = feat.encode_all(task.load_split("train"))
        result = train(model, task, items, items[:8], TrainConfig(steps=8, batch_size=4, eval_every=4, lr=0.05,
                                                                  seed=5), progress=False)
        runs.append((result.losses, model.encoder.state_dict()))
    (losses, first), (again_losses, again) = runs
    assert losses == again_losses and all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("patience, stops_at", [(1, 8), (2, 10), (3, 12), (0, 12)])
def test_patience_stops_once_dev_has_not_improved_for_that_many_evaluations(tiny_gpt2, toy_task_file, monkeypatch,
                                                                           patience, stops_at):
    """Scripted dev (0.5, 0.75, 0.875, 0.625, 0.5, 0.4): best at step 6, then no better. Patience p stops p
    evaluations later, keeps the best prompt, and is not a pruned run; 0 trains every step, and so does a patience
    that runs out at the last step anyway (that run was not cut short)."""
    from autoplace import trainer
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items = feat.encode_all(task.load_split("train"))
    scripted = iter(DEV_SCORES + [0.4])
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: ({task.primary_metric: next(scripted)}, []))
    result = train(model, task, items, items, TrainConfig(steps=12, eval_every=2, lr=0.05, patience=patience),
                   progress=False)
    assert result.steps_done == stops_at and result.best_step == 6 and result.dev[task.primary_metric] == 0.875
    assert result.out_of_patience == (stops_at < 12) and not result.stopped_early


def test_evaluations_during_training_score_a_fixed_dev_subset_and_the_kept_prompt_all_of_dev(tiny_gpt2, toy_task_file,
                                                                                             monkeypatch):
    """eval_examples=6: every evaluation during training scores the same 6 dev examples, whatever the run's seed;
    the kept prompt of a finished run is then scored once on all of dev, and that is its dev score. A run that its
    callback stopped (a pruned trial) is not scored again."""
    from autoplace import trainer
    real, scored = trainer.evaluate, []

    def recording(model, task, items, batch_size=32):
        scored.append([id(item) for item in items])
        return real(model, task, items, batch_size)

    monkeypatch.setattr(trainer, "evaluate", recording)
    task, feat, model = _build(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items, dev = (feat.encode_all(task.load_split(split)) for split in ("train", "dev"))
    subsets = []
    for seed in (0, 1):
        scored.clear()
        result = train(model, task, items, dev, TrainConfig(steps=6, eval_every=2, lr=0.05, eval_examples=6,
                                                            seed=seed), progress=False)
        assert [len(s) for s in scored] == [6, 6, 6, len(dev)] == [6, 6, 6, 16]
        assert scored[0] == scored[1] == scored[2] and set(scored[0]) < {id(item) for item in dev}
        assert result.dev == real(model, task, dev)[0]  # the kept prompt on all of dev
        subsets.append(scored[0])
    assert subsets[0] == subsets[1]
    scored.clear()
    stopped = train(model, task, items, dev, TrainConfig(steps=6, eval_every=2, eval_examples=6), progress=False,
                    callback=lambda step, score: False)
    assert stopped.stopped_early and [len(s) for s in scored] == [6]
    grouped = [dataclasses.replace(item, group=f"q{i // 4}") for i, item in enumerate(dev)]  # 4 questions of 4 options
    scored.clear()
    train(model, task, items, grouped, TrainConfig(steps=2, eval_every=2, eval_examples=6), progress=False)
    kept = {item.group for item in grouped if id(item) in scored[0]}
    assert len(kept) == 1 and len(scored[0]) == 4  # one whole question: two would be 8 options, more than 6


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
