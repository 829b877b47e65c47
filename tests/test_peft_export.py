import json
from pathlib import Path

import pytest
import torch

from autoplace.featurize import collate
from autoplace.errors import AutoplaceError
from autoplace.config import PromptConfig
from autoplace.runner import fit, prepare
from autoplace.tasks import get_task
from autoplace.config import TrainConfig

peft = pytest.importorskip("peft")
from autoplace.peft_export import export_peft  # noqa: E402

PREFIX_TEMPLATE = "[P:4] {sentence} It was [MASK]"
# PEFT 0.21 calls a transformers attribute that transformers 5 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def without_slots(item) -> list[int]:
    return [t for t, s in zip(item.input_ids, item.slot_ids) if s < 0]


@pytest.fixture(params=["none", "mlp", "lstm"])
def exported(request, tiny_gpt2, toy_task_file, tmp_path):
    run = prepare(get_task(str(toy_task_file)), tiny_gpt2, PromptConfig(PREFIX_TEMPLATE, encoder=request.param))
    fit(run, TrainConfig(steps=10, lr=3e-2, eval_every=5), progress=False)
    run.model.eval()
    out = export_peft(run, tmp_path / "adapters" / "adapter")
    # the base is loaded from where the adapter says, with no other hint, as a PEFT user would
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(json.loads((out / "adapter_config.json").read_text())
                                                ["base_model_name_or_path"])
    peft_model = peft.PeftModel.from_pretrained(base, out)
    return run, out, peft_model.eval()


def test_peft_reproduces_autoplace_scores_and_predictions(exported):
    run, out, peft_model = exported
    assert [p.name for p in out.parent.iterdir()] == ["adapter"]  # written atomically, no temporary folder left
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"], config["inference_mode"]) == ("P_TUNING", "CAUSAL_LM", True)
    assert config["base_model_name_or_path"] == run.backbone.source and config["num_virtual_tokens"] == 4
    assert (Path(run.backbone.source) / "config.json").is_file()  # a folder transformers loads: tiny models are saved
    with torch.no_grad():
        assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight, run.model.encoder())

        items = run.items("test")
        assert all(it.answer == len(it.input_ids) - 1 for it in items)  # causal: the answer is read at the end
        ours = run.model(**collate(items, run.backbone.tokenizer.pad_token_id))
        theirs = torch.stack([peft_model(input_ids=torch.tensor([without_slots(it)])).logits[0, -1]
                              for it in items])[:, run.featurizer.label_ids]
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    preds = theirs.argmax(-1).tolist()
    assert preds == ours.argmax(-1).tolist()
    assert run.task.score(preds, items) == run.evaluate("test")


def test_right_padded_batches_of_different_lengths_match(exported):
    run, _, peft_model = exported
    sentences = ["good", "the movie was awful", "what a brilliant and lovely little film it was , truly"]
    items = [run.featurizer.encode({"sentence": s, "label": "pos"}) for s in sentences]
    rows = [without_slots(it) for it in items]
    assert len({len(r) for r in rows}) == len(rows)
    width, pad = max(map(len, rows)), run.backbone.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    last = 4 + mask.sum(1) - 1  # PEFT prepends the 4 virtual tokens (and ones to the attention mask)
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        ours = run.model(**collate(items, pad))
    torch.testing.assert_close(logits[torch.arange(len(rows)), last][:, run.featurizer.label_ids], ours,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("template, message", [
    ("{sentence} [P:2] It was [MASK]", r"PEFT can only prepend prompts: template .* has its slot after text"),
    ("[P:2] {sentence} [P:1] It was [MASK]", r"PEFT can only prepend prompts: template .* has 2 slots"),
    ("{sentence} It was [MASK]", r"template .* has no \[P\] slot"),
])
def test_templates_peft_cannot_express_are_refused(tiny_gpt2, toy_task_file, tmp_path, template, message):
    run = prepare(get_task(str(toy_task_file)), tiny_gpt2, PromptConfig(template, encoder="none"))
    with pytest.raises(AutoplaceError, match=message):
        export_peft(run, tmp_path / "adapter")
    assert not any(tmp_path.glob("*adapter*"))


def test_masked_lm_is_refused(tiny_bert, toy_task_file, tmp_path):
    run = prepare(get_task(str(toy_task_file)), tiny_bert, PromptConfig(PREFIX_TEMPLATE, encoder="none"))
    with pytest.raises(AutoplaceError, match="PEFT export needs a causal LM: backbone tiny-bert is a masked LM"):
        export_peft(run, tmp_path / "adapter")


def test_a_calibrated_prompt_is_refused_not_exported_without_its_prior(tiny_gpt2, toy_task_file, tmp_path):
    """PEFT has no place for the content-free prior, so the adapter would score differently from autoplace."""
    from autoplace.runner import export, load, metadata
    run = prepare(get_task(str(toy_task_file)), tiny_gpt2, PromptConfig(PREFIX_TEMPLATE, encoder="none",
                                                                         calibrate=True))
    cfg = TrainConfig(steps=2, eval_every=1)
    export(tmp_path / "artifact", run, metadata(run, cfg, fit(run, cfg, progress=False), None))
    loaded, meta = load(tmp_path / "artifact")
    assert meta["prompt"]["calibrate"] and meta["calibration"]["p_cf"]  # what `export --format peft` is handed
    for calibrated in (run, loaded):
        with pytest.raises(AutoplaceError, match=r"calibrated .*content-free prior.*PEFT adapter has no place "
                                                 r"for that prior.*--format autoplace.*--trial") as caught:
            export_peft(calibrated, tmp_path / "adapter")
        assert "\n" not in str(caught.value)
    assert not any(tmp_path.glob("*adapter*"))
