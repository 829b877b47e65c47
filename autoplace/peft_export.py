"""Export a prefix-only prompt as a PEFT P-tuning adapter, for use without autoplace.

Why: a prompt whose only slot starts the input (``[P:n] {sentence} ... [MASK]``) on a causal LM is exactly what
PEFT's P-tuning does: it prepends ``num_virtual_tokens`` vectors to the token embeddings. Such a prompt can then be
served by anything that speaks PEFT (``peft.PeftModel.from_pretrained(base_model, out_dir)``). Prompts anywhere
else (a slot after text, several slots), masked LMs and calibrated prompts (PEFT has no place for the content-free
prior their scores are divided by) have no PEFT equivalent and are refused with an AutoplaceError.

How: autoplace's encoder (none / mlp / lstm) is run once and its output, the final prompt vectors
(n_tokens, hidden), is saved as PEFT's ``prompt_embeddings`` in ``adapter_model.safetensors``; the
``adapter_config.json`` is a ``PromptEncoderConfig`` with ``inference_mode: true`` and ``task_type: CAUSAL_LM``.
In inference mode PEFT uses ``prompt_encoder.embedding.weight`` as the prompt directly (its own MLP/LSTM head is
neither built nor applied), so PEFT prepends exactly autoplace's vectors, whichever encoder produced them. The
adapter is for inference: PEFT refuses ``is_trainable=True`` for saved prompt-learning adapters, and the
``encoder_*`` fields (autoplace's encoder kind, width = hidden size) are descriptive only.

Feeding it: give PEFT the token ids autoplace builds for an example with the slot positions removed
(``[t for t, s in zip(item.input_ids, item.slot_ids) if s < 0]``): the template's literal text is tokenized the
way autoplace does it (e.g. the field after the slot starts with a space), and the answer is read from the logits at
the last position. Batches must be right-padded: PEFT ignores ``position_ids`` and GPT-2-style models number
positions 0..n-1 regardless of the attention mask, so left padding shifts the text's positions away from what
the prompt was trained with. ``autoplace_prompt.json`` next to the adapter records the template, the verbalizer and
the label token ids.

The folder is written to a temporary sibling and renamed into place, like autoplace's own artifacts.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .artifact import save_file, staged
from .errors import AutoplaceError
from .runner import PromptRun
from .template import Slot, Text

INFO_FILE = "autoplace_prompt.json"


def check_exportable(run: PromptRun) -> None:
    """Raise AutoplaceError (one line, saying why) unless PEFT can reproduce this prompt exactly."""
    template = run.featurizer.template
    if not run.backbone.causal:
        raise AutoplaceError(f"PEFT export needs a causal LM: backbone {run.backbone.name} is a masked LM")
    if run.featurizer.prefix:
        raise AutoplaceError(f"PEFT can only prepend prompts: backbone {run.backbone.name}'s tokenizer puts "
                             f"{len(run.featurizer.prefix)} special token(s) before the prompt")
    if run.prompt.calibrate or run.model.log_prior is not None:
        raise AutoplaceError("PEFT export would drop this prompt's calibration: it is calibrated (its label scores "
                             "are divided by a content-free prior, p_cf) and a PEFT adapter has no place for that "
                             "prior, so it would score differently; export --format autoplace, or pick an "
                             "uncalibrated trial with --trial")
    slots = template.slots
    if not slots:
        raise AutoplaceError(f"PEFT export needs a prompt: template {template.text!r} has no [P] slot")
    deeper = [str(slot.depth) for slot in slots if slot.depth != 0]
    if deeper:
        raise AutoplaceError(f"PEFT export needs prompts at the input: template {template.text!r} puts a prompt at "
                             f"layer {', '.join(deeper)} (@k, @all), which PEFT's prompt tuning cannot hold; export "
                             "--format autoplace")
    if len(slots) > 1:
        raise AutoplaceError(f"PEFT can only prepend prompts: template {template.text!r} has {len(slots)} slots; "
                             "export needs exactly one, at the start")
    # whitespace-only text before the slot produces no tokens (template.segments drops it)
    first = next(p for p in template.parts if not (isinstance(p, Text) and not p.text.strip()))
    if not isinstance(first, Slot):
        raise AutoplaceError(f"PEFT can only prepend prompts: template {template.text!r} has its slot after text")


def export_peft(run: PromptRun, out_dir: str | Path) -> Path:
    """Write run's prompt as a PEFT P-tuning adapter folder (replacing an older one only once complete)."""
    check_exportable(run)
    try:
        from peft import PromptEncoderConfig
        from peft.utils import SAFETENSORS_WEIGHTS_NAME
    except ImportError:
        raise AutoplaceError("PEFT export needs the peft package: pip install 'autoplace[peft]'") from None
    with torch.no_grad():
        vectors = run.model.encoder().detach().float().cpu().contiguous()
    n_tokens, hidden = vectors.shape
    model_config = run.backbone.model.config
    config = PromptEncoderConfig(
        task_type="CAUSAL_LM", base_model_name_or_path=run.backbone.source or run.backbone.name, inference_mode=True,
        num_virtual_tokens=n_tokens, token_dim=hidden, num_transformer_submodules=1,
        num_attention_heads=getattr(model_config, "num_attention_heads", None),
        num_layers=getattr(model_config, "num_hidden_layers", None),
        encoder_reparameterization_type="LSTM" if run.model.encoder.encoder_type == "lstm" else "MLP",
        encoder_hidden_size=hidden)
    info = {"template": run.featurizer.template.text, "task": run.task.name, "model": run.backbone.name,
            "encoder": run.model.encoder.encoder_type, "verbalizer": run.task.verbalizer,
            "label_ids": list(run.featurizer.label_ids), "num_virtual_tokens": n_tokens,
            "answer_scoring": run.task.answer_scoring,
            "usage": "peft.PeftModel.from_pretrained(base_model, this_folder); feed autoplace's token ids without "
                     "the slot positions, right-padded, and read the logits at the last real position"
                     + ("" if run.task.answer_scoring == "first_token" else
                        "; answers are scored whole: append each answer's tokens but its last and sum (or, for "
                        "'mean', average) the log-probabilities of its tokens from the last input position on")}

    with staged(out_dir, "peft") as tmp:
        config.save_pretrained(str(tmp))
        save_file({"prompt_embeddings": vectors}, tmp / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return Path(out_dir)
