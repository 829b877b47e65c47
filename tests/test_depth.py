"""Prompts at depth: `[P:n@k]` replaces layer k's input at its slots, `[P:n@all]` every layer's; checked against a
brute-force forward whose hooks replace hidden states by hand, position by position."""
import json

import pytest
import torch

import autoplace
from autoplace.errors import AutoplaceError
from autoplace.featurize import NO_SLOT, collate
from autoplace.template import ALL_LAYERS, TemplateError, parse
from conftest import build_prompt

EXAMPLES = [{"sentence": "the movie was good", "label": "pos"}, {"sentence": "a dull and awful film", "label": "neg"}]
TEMPLATES = ["[P:2@1] {sentence} It was [P:1@1] [MASK]",            # late: every prompt at layer 1 of 2
             "{sentence} [P:3@all] It was [MASK]",                   # deep: every layer, after a prefix
             "[P:1] {sentence} [P:2@1] It was [P:2@all] [MASK]"]     # the three mixed


def test_slot_depth_syntax():
    template = parse("[P:4@12] {x} [P@all] [P:2] [P:3@0] [MASK]")
    assert template.depths == [12, ALL_LAYERS, 0, 0] and [s.length for s in template.slots] == [4, 1, 2, 3]
    assert list(template.slots[0].layers(30)) == [12] and list(template.slots[1].layers(3)) == [0, 1, 2]
    for bad, problem in (("[P:3@x] [MASK]", "slot depth 'x' is not a layer number or 'all'"),
                         ("[P:3@-1] [MASK]", "slot depth '-1'"), ("[P:2@] [MASK]", "slot depth ''")):
        with pytest.raises(TemplateError, match=problem):
            parse(bad)


def test_a_depth_beyond_the_model_is_refused_naming_its_layers(tiny, toy_task_file):
    with pytest.raises(TemplateError, match=rf"slot depth @2 is beyond {tiny.name}'s 2 layers "
                                            r"\(use @0 to @1, or @all\)"):
        build_prompt(toy_task_file, tiny, "{sentence} [P:2@2] It was [MASK]")


def _row_of(template, n_layers):
    """(token, layer) -> row of the encoder's output, by the documented layout: token-major, layers ascending."""
    table, row, token = {}, 0, 0
    for slot in parse(template).slots:
        for _ in range(slot.length):
            for layer in (range(n_layers) if slot.depth == ALL_LAYERS else [slot.depth]):
                table[token, layer] = row
                row += 1
            token += 1
    return table


def _brute_force_scores(model, batch, template):
    """The trunk with no autoplace hook and no cache: hand-written hooks replace each slot position's hidden state
    at each layer's input, one position at a time."""
    backbone = model.backbone
    rows = model.encoder()
    table = _row_of(template, backbone.n_layers)
    slots = batch["slot_ids"].tolist()

    def replaced(hidden, layer):
        hidden = hidden.clone()
        for b, row in enumerate(slots):
            for p, token in enumerate(row):
                if token != NO_SLOT and (token, layer) in table:
                    hidden[b, p] = rows[table[token, layer]].to(hidden.dtype)
        return hidden

    def hook_for(layer):
        def hook(module, args, kwargs):
            if args:
                return (replaced(args[0], layer), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replaced(kwargs["hidden_states"], layer)}
        return hook

    handles = [layer.register_forward_pre_hook(hook_for(i), with_kwargs=True)
               for i, layer in enumerate(backbone.layers) if i > 0]
    try:
        embeds = replaced(backbone.embeddings(batch["input_ids"]), 0)
        kv = {"use_cache": False} if backbone.causal else {}
        hidden = backbone.trunk(inputs_embeds=embeds, attention_mask=batch["attention_mask"], **kv).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    return model.score(hidden[torch.arange(len(hidden)), batch["answer"]])


def _scores_and_grad(model, batch):
    model.encoder.zero_grad()
    scores = model(**batch)
    scores.logsumexp(-1).sum().backward()
    return scores.detach(), model.encoder.input.grad.clone()


@pytest.mark.parametrize("template", TEMPLATES)
def test_prompts_at_depth_match_a_brute_force_forward_with_every_cache_on_or_off(tiny, toy_task_file, template):
    task, featurizer, model = build_prompt(toy_task_file, tiny, template, encoder="mlp")
    with torch.no_grad():
        model.encoder.input.copy_(torch.randn_like(model.encoder.input) * 3)  # unlike any hidden state
    batch = collate(featurizer.encode_all(EXAMPLES), tiny.tokenizer.pad_token_id)
    model.encoder.zero_grad()
    expected = _brute_force_scores(model, batch, template)
    expected.logsumexp(-1).sum().backward()
    expected_grad = model.encoder.input.grad.clone()
    assert expected_grad.abs().sum() > 0
    n_rows = sum(s.length * (tiny.n_layers if s.depth == ALL_LAYERS else 1) for s in parse(template).slots)
    assert model.encoder.input.shape == (n_rows, tiny.hidden_size)
    for prefix_cache in (True, False):
        for late_cache in (True, False):
            model.use_prefix_cache, model.use_late_cache = prefix_cache, late_cache
            for _ in range(2):  # the second call reads the caches
                scores, grad = _scores_and_grad(model, batch)
                torch.testing.assert_close(scores, expected.detach(), rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_prompts_at_depth_match_the_brute_force_forward_on_smollm2(toy_task_file, tmp_path):
    from autoplace.backbones import load_backbone
    smol = load_backbone("smollm2-135m", "cpu")
    with pytest.raises(TemplateError, match="beyond smollm2-135m's 30 layers"):
        build_prompt(toy_task_file, smol, "{sentence} [P:2@30] It was [MASK]")
    for template in ("{sentence} [P:2@15] It was [MASK]", "{sentence} It was [P:2@all] [MASK]"):
        task, featurizer, model = build_prompt(toy_task_file, smol, template, encoder="mlp")
        batch = collate(featurizer.encode_all(EXAMPLES), smol.tokenizer.pad_token_id)
        expected = _brute_force_scores(model, batch, template).detach()
        for late_cache in (True, False):
            model.use_late_cache = late_cache
            torch.testing.assert_close(model(**batch).detach(), expected, rtol=1e-4, atol=1e-4)
    trained = autoplace.train(str(toy_task_file), "{sentence} [P:2@15] It was [MASK]", tmp_path / "a",
                              model="smollm2-135m", steps=2, eval_every=2)
    assert autoplace.load(tmp_path / "a").predict(EXAMPLES) == trained.predict(EXAMPLES)


def test_a_prompt_at_layer_k_changes_nothing_below_it(tiny_gpt2, toy_task_file):
    """The filler below a late slot: the embeddings are the pad token's, whatever the prompt; or, with filler
    init, the tokens its prompt starts from."""
    task, featurizer, model = build_prompt(toy_task_file, tiny_gpt2, "{sentence} [P:2@1] It was [MASK]")
    batch = collate(featurizer.encode_all(EXAMPLES), tiny_gpt2.tokenizer.pad_token_id)
    embedded = model.embed(batch["input_ids"], batch["slot_ids"])
    assert torch.equal(embedded, tiny_gpt2.embeddings(batch["input_ids"]))
    assert (batch["input_ids"][batch["slot_ids"] != NO_SLOT] == tiny_gpt2.tokenizer.pad_token_id).all()
    task, featurizer, model = build_prompt(toy_task_file, tiny_gpt2, "{sentence} [P:2@1] It was [MASK]",
                                           filler="init", init_words=("great", "movie"))
    batch = collate(featurizer.encode_all(EXAMPLES), tiny_gpt2.tokenizer.pad_token_id)
    words = [featurizer.tokens(" great")[0], featurizer.tokens(" movie")[0]]
    assert batch["input_ids"][batch["slot_ids"] != NO_SLOT].view(-1, 2).tolist() == [words] * len(EXAMPLES)
    with pytest.raises(AutoplaceError, match="unknown filler 'dots' \\(use pad, init\\)"):
        build_prompt(toy_task_file, tiny_gpt2, "{sentence} [P:2@1] It was [MASK]", filler="dots")


@pytest.mark.parametrize("cached", [True, False])
def test_the_late_cache_runs_the_layers_below_once_per_example(tiny, toy_task_file, cached):
    late = tiny.caches.late
    late.clear()
    hits, misses = late.hits, late.misses
    task, featurizer, model = build_prompt(toy_task_file, tiny, "{sentence} [P:2@1] It was [MASK]")
    model.use_late_cache = cached
    batch = collate(featurizer.encode_all(EXAMPLES), tiny.tokenizer.pad_token_id)
    calls = []
    handle = tiny.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        for _ in range(3):
            model(**batch).sum().backward()
    finally:
        handle.remove()
    assert len(calls) == (1 if cached else 3)  # layer 0 ran once, for the cache, or on every forward
    assert len(late.store) == (len(EXAMPLES) if cached else 0)
    if cached:
        assert (late.hits - hits, late.misses - misses) == (2 * len(EXAMPLES), len(EXAMPLES))


def test_the_late_cache_stays_within_its_memory_bound(tiny_gpt2, toy_task_file):
    late = tiny_gpt2.caches.late
    late.clear()
    task, featurizer, model = build_prompt(toy_task_file, tiny_gpt2, "{sentence} [P:2@1] It was [MASK]")
    one = collate(featurizer.encode_all(EXAMPLES[:1]), tiny_gpt2.tokenizer.pad_token_id)
    model(**one)
    late.max_bytes = late.bytes  # room for one example: the next batch's push the oldest out
    try:
        other = collate(featurizer.encode_all(EXAMPLES[1:]), tiny_gpt2.tokenizer.pad_token_id)
        model(**other)
        (key, kept), = late.store.items()
        assert key[2] == tuple(other["input_ids"][0].tolist()) and late.bytes == kept.numel() * kept.element_size()
        torch.testing.assert_close(model(**one), (setattr(model, "use_late_cache", False), model(**one))[1])
    finally:
        late.max_bytes = type(late)().max_bytes


def test_vocab_init_at_a_layer_starts_from_a_real_tokens_hidden_state_there(tiny_gpt2, toy_task_file):
    from autoplace.injection import layer_inputs
    task, featurizer, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2@1] {sentence} [MASK]",
                                           init="vocab", init_words=("great", "movie"))
    ids = [featurizer.tokens(" great")[0], featurizer.tokens(" movie")[0]]
    sequence = torch.tensor([[tiny_gpt2.tokenizer.pad_token_id, *ids]])
    at_layer_1 = layer_inputs(tiny_gpt2.trunk, tiny_gpt2.layers, [1], input_ids=sequence,
                              attention_mask=torch.ones_like(sequence))[1][0, 1:]
    torch.testing.assert_close(model.encoder.input.detach(), at_layer_1)
    _, _, random = build_prompt(toy_task_file, tiny_gpt2, "[P:2@all] {sentence} [MASK]", init="random")
    norms = random.encoder.input.detach().norm(dim=1)
    embedding_norm = tiny_gpt2.embeddings.weight.norm(dim=1).mean()
    torch.testing.assert_close(norms[0::2], embedding_norm.expand(2))  # layer 0 rows: the embeddings' norm
    assert not torch.allclose(norms[1::2], embedding_norm.expand(2), rtol=0.05)  # layer 1: its own


@pytest.mark.parametrize("template", ["{sentence} [P:2@1] It was [MASK]", "[P:2@all] {sentence} It was [MASK]"])
def test_prompts_at_depth_train_export_load_and_predict(tiny, toy_task_file, tmp_path, template):
    trained = autoplace.train(str(toy_task_file), template, tmp_path / "a", model=tiny.name, steps=6, eval_every=3,
                              lr=3e-2)
    meta = json.loads((tmp_path / "a" / "template.json").read_text())
    assert meta["template"] == template
    loaded = autoplace.load(tmp_path / "a")
    assert loaded.evaluate("test") == trained.evaluate("test")
    assert loaded.predict(EXAMPLES) == trained.predict(EXAMPLES)
    start = build_prompt(toy_task_file, tiny, template, encoder="none")[2].encoder.input.shape
    assert loaded.run.model.encoder.input.shape == start


@pytest.mark.parametrize("template", ["[P:2@1] {sentence} It was [MASK]", "[P:2@all] {sentence} It was [MASK]"])
def test_peft_export_refuses_a_prompt_below_the_input(tiny_gpt2, toy_task_file, tmp_path, template):
    from autoplace.config import PromptConfig
    from autoplace.peft_export import export_peft
    from autoplace.runner import prepare
    from autoplace.tasks import get_task
    run = prepare(get_task(str(toy_task_file)), tiny_gpt2, PromptConfig(template, encoder="none"))
    with pytest.raises(AutoplaceError, match=r"PEFT export needs prompts at the input: .* at layer (1|all) ") as caught:
        export_peft(run, tmp_path / "adapter")
    assert "\n" not in str(caught.value) and not any(tmp_path.glob("*adapter*"))


# -- depth in the search ----------------------------------------------------------------------------------------------
DEPTH_SPACE = """
skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK] <end>"
slots: {min: 1, max: 2}
length: {min: 2, max: 4}
encoder: [none]
lr: {low: 0.01, high: 0.1}
depth: [input, all, late]
late_layers: {min: 0.5, max: 0.5}
depth_lr: {all: {low: 0.01, high: 0.02}, late: {low: 0.1, high: 0.2}}
budget: {steps: 4, eval_every: 2, batch_size: 8, max_length: 64}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab, lr_all: 0.015, lr_late: 0.15}
"""


def test_a_reference_encoder_the_space_lacks_becomes_the_spaces_own(tmp_path):
    """The late reference wants the LSTM, the deep one plain vectors: a space offering only the MLP gets the MLP
    (an enqueued category outside the space would fail the trial in Optuna)."""
    from autoplace.study.space import load_space

    def references(text: str) -> dict:
        (tmp_path / "space.yaml").write_text(text)
        space = load_space(tmp_path / "space.yaml")
        space.n_layers = 4
        return dict(space.references(causal=True))
    refs = references(DEPTH_SPACE.replace("encoder: [none]", "encoder: [mlp]").replace("encoder: none, ", ""))
    assert {refs[name]["encoder"] for name in refs if name != "zero-shot"} == {"mlp"}
    refs = references(DEPTH_SPACE.replace("encoder: [none]", "encoder: [none, lstm]"))
    assert (refs["start-only"]["encoder"], refs["deep"]["encoder"], refs["late"]["encoder"]) == ("none", "none", "lstm")
    with pytest.raises(AutoplaceError, match="reference"):
        references(DEPTH_SPACE.replace("lr_late: 0.15", "lr_late: 0.15, encoder_all: gru"))


def test_a_space_samples_depth_with_a_learning_rate_range_per_depth(tmp_path):
    import optuna
    from autoplace.study.space import load_space
    (tmp_path / "space.yaml").write_text(DEPTH_SPACE)
    space = load_space(tmp_path / "space.yaml")
    assert space.depths == ["input", "all", "late"] and space.needs_layers
    with pytest.raises(AutoplaceError, match="a late depth needs the model's number of layers"):
        space.late_layers()
    space.n_layers = 30
    assert space.late_layers() == (15, 15)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        plan = space.sample(trial, causal=True)
        depth = trial.params["depth"]
        seen.add(depth)
        assert set(parse(plan.template).depths) == {{"input": 0, "all": ALL_LAYERS, "late": 15}[depth]}
        name, (low, high) = ("lr", (0.0, 1.0)) if depth == "input" else (f"lr@{depth}", space.depth_lr[depth][:2])
        assert low <= trial.params[name] <= high and plan.lr == trial.params[name]
        assert space.plan_of(study.tell(trial, 0.5) or study.trials[-1], causal=True) == plan
    assert seen == {"input", "all", "late"}
    refs = dict(space.references(causal=True))
    assert list(refs) == ["zero-shot", "start-only", "deep", "late", "end-only", "mixed"]
    assert refs["start-only"]["depth"] == "input" and refs["start-only"]["lr"] == 0.05
    assert refs["deep"] == {**{k: v for k, v in refs["start-only"].items() if k != "lr"}, "depth": "all",
                            "lr@all": 0.015}
    assert refs["late"] == {**{k: v for k, v in refs["end-only"].items() if k != "lr"}, "depth": "late",
                            "lr@late": 0.15, "late_layer": 15}


@pytest.mark.parametrize("body, needle", [
    ("depth: [input, deep]\n", "key 'depth' must be a non-empty list of input, all, late"),
    ("late_layers: {min: 0.5, max: 2}\n", "key 'late_layers' must stay within 0-1"),
    ("depth_lr: {sideways: {low: 1, high: 2}}\n", "key 'depth_lr' must map all and/or late"),
    ("depth_lr: {late: {low: 0.1}}\n", "key 'depth_lr.late' must be a mapping with low and high"),
])
def test_bad_depth_keys_are_refused_in_one_line(tmp_path, body, needle):
    from autoplace.study.space import load_space
    (tmp_path / "space.yaml").write_text('skeleton: "<a> {sentence} [MASK]"\n' + body)
    with pytest.raises(AutoplaceError, match=needle.replace("(", r"\(")):
        load_space(tmp_path / "space.yaml")


def test_a_search_over_depth_trains_deep_and_late_references_and_reports_depth(toy_task_file, tmp_path, capsys):
    import optuna
    from autoplace.cli import main
    (tmp_path / "space.yaml").write_text(DEPTH_SPACE)
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(tmp_path / "space.yaml"), "--model",
                 "tiny-gpt2", "--out", str(out), "--n-trials", "8", "--pruner", "none"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    by_reference = {t.user_attrs.get("reference"): t for t in study.trials}
    assert by_reference["deep"].user_attrs["template"] == "[P:4@all] {sentence} It was [MASK]"
    assert by_reference["late"].user_attrs["template"] == "{sentence} [P:2@1] It was [P:2@1] [MASK]"
    assert [by_reference[r].user_attrs["depth"] for r in ("start-only", "deep", "late")] == ["input", "all", "late"]
    report = (out / "report.md").read_text()
    assert "| depth | trials | complete | best dev | mean dev |" in report and "| late | " in report
    best = json.loads((out / "best" / "template.json").read_text())
    assert autoplace.load(out / "best").evaluate("test") == best["test"]
