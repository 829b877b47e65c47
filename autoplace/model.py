"""PromptedModel: a frozen backbone plus trainable prompt vectors placed by a template, scored lean.

Lean scoring: the trunk runs once; only the hidden state at the answer position is read, and it is multiplied by the
LM-head rows of the label words only (cloze: the full head at that one position). Full-vocabulary logits at every
position would cost ~20% of a SmolLM2 step for nothing.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone
from .encoders import PromptEncoder
from .encoding import NO_SLOT


class PromptedModel(nn.Module):
    def __init__(self, backbone: Backbone, encoder: PromptEncoder, label_ids: list[int] | None):
        super().__init__()
        self.backbone = backbone           # a dataclass, not a submodule: state_dict() holds only the prompt
        self.encoder = encoder
        self.cloze = label_ids is None
        self.register_buffer("label_ids", torch.tensor(label_ids or [], dtype=torch.long), persistent=False)

    def embed(self, input_ids: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with prompt vectors at the slot positions, in one vectorised step."""
        tokens = self.backbone.embeddings(input_ids)
        if self.encoder.n_tokens == 0:
            return tokens
        prompts = self.encoder().to(tokens.dtype)
        is_slot = (slot_ids != NO_SLOT).unsqueeze(-1)
        return torch.where(is_slot, prompts[slot_ids.clamp(min=0)], tokens)

    def forward(self, input_ids, slot_ids, attention_mask, answer, **_) -> torch.Tensor:
        """Scores: (batch, n_labels) for classification, (batch, vocab) for cloze."""
        embeds = self.embed(input_ids, slot_ids)
        hidden = self.backbone.trunk(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        at_answer = hidden[torch.arange(hidden.shape[0], device=hidden.device), answer]
        return self.score(at_answer)

    def score(self, at_answer: torch.Tensor) -> torch.Tensor:
        head = self.backbone.head
        if not self.cloze and isinstance(head, nn.Linear):
            bias = head.bias[self.label_ids] if head.bias is not None else None
            return nn.functional.linear(at_answer, head.weight[self.label_ids], bias)
        logits = head(at_answer)
        return logits if self.cloze else logits[:, self.label_ids]
