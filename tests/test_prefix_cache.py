"""The causal prefix key/value cache must change nothing but speed: same scores, same prompt gradients."""
import pytest
import torch

from autoplace.backbones import load_backbone
from autoplace.featurize import collate
from autoplace.config import PromptConfig
from autoplace.pipeline import build
from autoplace.prefix_cache import PrefixCache, first_slot
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.inference import predict
from autoplace.trainer import train

# prefixes of different lengths in one batch, an empty one among them (its first token is a slot)
SENTENCES = ["the movie was good", "a much longer sentence than the other one, with a clause or two in it", "bad",
             "", "it was fine I guess"]
END = "{sentence} It was [P:4] [MASK]"
MIDDLE = "{sentence} [P:3] It was [MASK]"
MIXED = "{sentence} [P:2] It was [P:3] [MASK]"
PREFIX = "[P:3] {sentence} It was [MASK]"


def _model(backbone, task_file, template, encoder="mlp"):
    task = get_task(str(task_file))
    feat, model = build(task, backbone, PromptConfig(template, encoder=encoder))
    with torch.no_grad():  # make the encoder's correction non-zero, so gradients pass through all of it
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return task, feat, model


def _batch(feat, backbone, sentences=SENTENCES):
    items = [feat.encode({"sentence": s, "label": "pos"}) for s in sentences]
    return items, collate(items, backbone.tokenizer.pad_token_id)


def _scores_and_grads(model, batch, cached: bool):
    model.use_prefix_cache = cached
    model.encoder.zero_grad()
    scores = model(**batch)
    (scores * torch.linspace(-1, 1, scores.numel()).view_as(scores)).sum().backward()
    grads = [p.grad.clone() for p in model.encoder.parameters()]
    model.use_prefix_cache = True
    return scores.detach(), grads


def _assert_same(model, batch, rtol, atol):
    """Equal up to float rounding: atol is relative to each tensor's largest entry (sums run in another order)."""
    plain, plain_grads = _scores_and_grads(model, batch, cached=False)
    cached, cached_grads = _scores_and_grads(model, batch, cached=True)
    for got, want in zip([cached, *cached_grads], [plain, *plain_grads]):
        scale = float(want.abs().max())
        assert scale > 0
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("template", [END, MIDDLE, MIXED])
@pytest.mark.parametrize("encoder", ["none", "lstm"])
def test_cached_scores_and_prompt_gradients_equal_the_uncached_forward(tiny_gpt2, toy_task_file, template, encoder):
    task, feat, model = _model(tiny_gpt2, toy_task_file, template, encoder)
    items, batch = _batch(feat, tiny_gpt2)
    cut = first_slot(batch["slot_ids"])
    with_prefix = int((cut > 0).sum())
    assert len(set(cut.tolist())) >= 4 and with_prefix == len(SENTENCES) - (template != END)  # "" has none
    cache = tiny_gpt2.prefix_cache
    cache.clear()
    misses = cache.misses
    _assert_same(model, batch, rtol=1e-5, atol=1e-5)
    assert cache.misses - misses == with_prefix and len(cache.store) == with_prefix  # the cached path ran
    hits = cache.hits
    _assert_same(model, batch, rtol=1e-5, atol=1e-5)  # again, from a warm cache
    assert cache.hits - hits == with_prefix


@pytest.mark.slow
def test_cached_forward_equals_uncached_on_smollm2(toy_task_file):
    smol = load_backbone("smollm2-135m", "cpu")
    for template in (END, MIXED):
        task, feat, model = _model(smol, toy_task_file, template, "mlp")
        items, batch = _batch(feat, smol, SENTENCES[:3])
        _assert_same(model, batch, rtol=1e-4, atol=1e-4)


def test_prefix_only_templates_and_masked_lms_keep_the_plain_path(tiny_gpt2, tiny_bert, toy_task_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the prefix cache ran")

    monkeypatch.setattr(PrefixCache, "past", refuse)
    for backbone, template in ((tiny_gpt2, PREFIX), (tiny_gpt2, "[P:1] {sentence} [P:2] It was [MASK]"),
                               (tiny_bert, END), (tiny_gpt2, "{sentence} It was [MASK]")):
        task, feat, model = _model(backbone, toy_task_file, template)
        items, batch = _batch(feat, backbone)
        model(**batch)
    assert _model(tiny_bert, toy_task_file, END)[2].prefix_cache is None
    task, feat, model = _model(tiny_gpt2, toy_task_file, END)
    with pytest.raises(AssertionError, match="prefix cache ran"):  # the spy sees the cached path where it applies
        model(**_batch(feat, tiny_gpt2)[1])


def test_cache_is_shared_across_templates_and_never_changed_by_a_forward(tiny_gpt2, toy_task_file):
    cache = tiny_gpt2.prefix_cache
    cache.clear()
    task, feat, model = _model(tiny_gpt2, toy_task_file, END)
    items, batch = _batch(feat, tiny_gpt2)
    model(**batch).sum().backward()
    before = {k: v.clone() for k, v in cache.store.items()}
    misses = cache.misses
    other = _model(tiny_gpt2, toy_task_file, "{sentence} It was [P:1] so [MASK]")  # same text before its first slot
    for _ in range(2):
        other[2](**_batch(other[1], tiny_gpt2)[1]).sum().backward()
        model(**batch).sum().backward()
    assert cache.misses == misses and before.keys() == cache.store.keys()
    assert all(torch.equal(before[k], cache.store[k]) for k in before)


def test_least_recently_used_prefixes_are_dropped_beyond_the_budget(tiny_gpt2, toy_task_file):
    cache = tiny_gpt2.prefix_cache
    cache.clear()
    task, feat, model = _model(tiny_gpt2, toy_task_file, END)
    _, first = _batch(feat, tiny_gpt2, SENTENCES[:2])
    _, second = _batch(feat, tiny_gpt2, SENTENCES[2:])
    model(**first)
    budget, cache.max_bytes = cache.max_bytes, cache.bytes  # room for the first batch only
    try:
        with torch.no_grad():
            model(**second)
        newest = {ids for _, ids in cache.store}
        assert newest == {tuple(second["input_ids"][row, :n].tolist())
                          for row, n in enumerate(first_slot(second["slot_ids"]).tolist()) if n}
        _assert_same(model, first, rtol=1e-5, atol=1e-5)
    finally:
        cache.max_bytes = budget


def test_training_and_prediction_with_the_cache_match_without(tiny_gpt2, toy_task_file):
    runs = []
    for cached in (False, True):
        torch.manual_seed(0)
        task, feat, model = _model(tiny_gpt2, toy_task_file, MIXED, "lstm")
        model.use_prefix_cache = cached
        items = feat.encode_all(task.load_split("train"))
        dev = feat.encode_all(task.load_split("dev"))
        result = train(model, task, items, dev, TrainConfig(steps=12, batch_size=8, lr=3e-2, eval_every=4),
                       progress=False)
        runs.append((result.losses, predict(model, dev, batch_size=5)))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-4, atol=1e-5)


def test_repeated_examples_in_a_batch_share_one_entry(tiny_gpt2, toy_task_file):
    cache = tiny_gpt2.prefix_cache
    cache.clear()
    task, feat, model = _model(tiny_gpt2, toy_task_file, MIDDLE)
    _, batch = _batch(feat, tiny_gpt2, ["bad", "the movie was good", "bad", ""])
    _assert_same(model, batch, rtol=1e-5, atol=1e-5)
    assert len(cache.store) == 2


def test_autocast_key_values_are_kept_apart_from_full_precision_ones(tiny_gpt2, toy_task_file):
    cache = tiny_gpt2.prefix_cache
    cache.clear()
    task, feat, model = _model(tiny_gpt2, toy_task_file, END)
    _, batch = _batch(feat, tiny_gpt2, SENTENCES[:3])
    full = model(**batch).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(**batch).float().detach()
        model.use_prefix_cache = False
        half_plain = model(**batch).float().detach()
    assert len(cache.store) == 6 and {t.dtype for t in cache.store.values()} == {torch.float32, torch.bfloat16}
    torch.testing.assert_close(half, half_plain, rtol=0.02, atol=0.02 * float(full.abs().max()))
