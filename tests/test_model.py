
import pytest
import torch

from autoplace.featurize import NO_SLOT, collate
from autoplace.errors import AutoplaceError
from autoplace.config import PromptConfig
from autoplace.pipeline import build
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.trainer import train
from conftest import build_prompt

EXAMPLE = {"sentence": "the movie was good", "label": "pos"}


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
    task, feat, model = build_prompt(toy_task_file, tiny, template)
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
    task, feat, model = build_prompt(toy_task_file, tiny, "[P:2] {sentence} It was [P:2] [MASK]")
    items = [feat.encode(EXAMPLE),
             feat.encode({"sentence": "a much longer sentence than the other one", "label": "neg"})]
    batch = collate(items, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        lean = model(**batch)
        embeds = model.embed(batch["input_ids"], batch["slot_ids"])
        full = tiny.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    expected = full[torch.arange(2), batch["answer"]][:, feat.label_ids]
    assert lean.shape == (2, 2)
    torch.testing.assert_close(lean, expected, rtol=1e-4, atol=1e-5)


def test_truncation_shortens_fields_only_and_keeps_slots_and_mask(tiny, toy_task_file):
    task, feat, model = build_prompt(toy_task_file, tiny, "[P:3] {sentence} It was [P:2] [MASK]", max_length=16)
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
    task, feat, model = build_prompt(toy_task_file, tiny, "[P:2] {sentence} [P:2] It was [P:2] [MASK]", encoder=encoder)
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


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_encoder_weights_depend_on_the_seed_only(tiny_gpt2, toy_task_file, encoder):
    template = "[P:2] {sentence} It was [MASK]"
    first = build_prompt(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=3)[2].encoder.state_dict()
    torch.rand(1000)  # whatever ran before must not change a seeded prompt
    again = build_prompt(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=3)[2].encoder.state_dict()
    other = build_prompt(toy_task_file, tiny_gpt2, template, encoder=encoder, seed=4)[2].encoder.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    # the layers themselves (not the seeded input vectors, not the zero-initialised last MLP layer) follow the seed
    layers = [k for k in first if k != "input" and not k.startswith("mlp.2.")]
    assert layers and all(not torch.equal(first[k], other[k]) for k in layers)


def test_prompt_gradients_are_the_same_every_time(tiny_gpt2, toy_task_file):
    """Placing the prompt vectors must have a backward that sums in a fixed order: an indexed gather's backward
    accumulates in thread order on CPU (at this size its gradients differed between identical calls), so a seed
    did not reproduce a run."""
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:3] {sentence} [P:3] It was [MASK]")
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


@pytest.mark.parametrize("has_bf16", [False, True])
def test_the_lstm_encoder_runs_under_cpu_bf16_autocast_in_fp32_where_the_cpu_has_no_bf16(monkeypatch, has_bf16):
    """oneDNN refuses a bf16 LSTM on a CPU without bf16 instructions; there the LSTM alone falls back to fp32, and
    where the CPU has them it runs under autocast as before (the benchmarks' bf16 numbers stay as measured)."""
    from autoplace import prompt_encoders
    monkeypatch.setattr(prompt_encoders, "cpu_has_bf16", lambda: has_bf16)
    torch.manual_seed(0)
    encoder = prompt_encoders.PromptEncoder(torch.randn(4, 16), "lstm")
    lstm, forward, seen = encoder.lstm, encoder.lstm.forward, []

    def recorded(sequence):  # what the LSTM was called under; then the fp32 LSTM, which every CPU can run
        seen.append((torch.is_autocast_enabled("cpu"), sequence.dtype))
        with torch.autocast("cpu", enabled=False):
            return forward(sequence.float())
    monkeypatch.setattr(lstm, "forward", recorded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = encoder()
    assert seen == [(has_bf16, torch.float32)] and rows.shape == (4, 16)
    if not has_bf16:  # and the real LSTM, not the recorder, runs under bf16 autocast: exactly the fp32 one
        monkeypatch.undo()
        monkeypatch.setattr(prompt_encoders, "cpu_has_bf16", lambda: False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features, _ = encoder._lstm(encoder.input[None])
        assert features.dtype == torch.float32 and torch.equal(features, lstm(encoder.input[None])[0])
