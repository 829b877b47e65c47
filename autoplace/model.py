"""PromptedModel: a frozen backbone plus trainable prompt vectors placed by a template, scored lean.

Lean scoring: the trunk runs once; only the hidden state at the answer position is read, and it is multiplied by the
LM-head rows of the label words only (cloze: the full head at that one position). Full-vocabulary logits at every
position would cost ~20% of a SmolLM2 step for nothing. Whole-answer scoring (multi-token label words, choice
candidates) needs the full head, for the log-softmax, but only at each candidate's own token positions.

Prefix cache (causal LMs): the text before each example's first prompt slot does not depend on the prompt, so its
key/values come from a cache shared by everything on the backbone (see prefix_cache.py) and only the rest of the
example runs with autograd. ``use_prefix_cache=False`` turns it off; the result is the same either way.

Depth (injection.py): prompt rows enter at the embeddings or at deeper layers' inputs. When every prompt enters at
layer k > 0, the hidden states at layer k's input come from the late cache (late_cache.py) and only layers k and up
run with autograd; ``use_late_cache=False`` turns it off, with the same result.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone
from .prompt_encoders import PromptEncoder
from .injection import Injector
from .prefix_cache import first_slot, rest_of


class PromptedModel(nn.Module):
    def __init__(self, backbone: Backbone, encoder: PromptEncoder, label_ids: list[int] | None,
                 use_prefix_cache: bool = True, answer_scoring: str = "first_token", injector: Injector | None = None,
                 use_late_cache: bool = True):
        super().__init__()
        # without a template's depths, every prompt token enters at the input (one row each)
        self.injector = injector or Injector([(t, 0) for t in range(encoder.n_tokens)], encoder.n_tokens, 1)
        self.use_late_cache = use_late_cache
        self.answer_scoring = answer_scoring  # whole answers: their tokens' log-probabilities, summed or averaged
        self.backbone = backbone           # a dataclass, not a submodule: state_dict() holds only the prompt
        self.encoder = encoder
        self.cloze = label_ids is None
        self.use_prefix_cache = use_prefix_cache
        self.register_buffer("label_ids", torch.tensor(label_ids or [], dtype=torch.long), persistent=False)
        self.content_free = None  # encoded content-free inputs when the scores are calibrated (calibration.py)
        self.log_prior = None     # their log label distribution, p_cf, for the prompt as it is now

    def embed(self, input_ids: torch.Tensor, slot_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the input layer's prompt vectors at the slot positions, in one vectorised step.

        A one-hot matmul, not an indexed gather (injection.py): the gather's backward adds the batch's gradients into
        each prompt row in whatever order the CPU threads finish, so the same seed gave different prompts run to
        run. The matmul sums in a fixed order."""
        tokens = self.backbone.embeddings(input_ids)
        if self.encoder.n_tokens == 0:
            return tokens
        return self.injector.place(tokens, slot_ids, self.encoder() if rows is None else rows, 0)

    def forward(self, input_ids, slot_ids, attention_mask, answer, candidate_tokens=None, candidate_index=None,
                **_) -> torch.Tensor:
        """Scores: (batch, n_labels) for classification, (batch, vocab) for cloze, (batch, n_candidates) for
        whole answers (-inf where an example has fewer candidates)."""
        rows = self.encoder() if self.encoder.n_tokens else None
        trunk, injector = self.backbone.trunk, self.injector
        no_kv = {"use_cache": False} if self.backbone.causal else {}  # a causal trunk would keep a K/V copy
        cache = self.prefix_cache
        cut = first_slot(slot_ids) if cache is not None else None
        start = answer
        if self.late_cache is not None:  # the layers below the first prompt ran once, earlier
            first = injector.first_layer
            states = self.late_cache.states(self.backbone, input_ids, attention_mask, first)
            with self.backbone.layers_from(first) as layers, \
                    injector.hooked(layers, slot_ids, rows, offset=first, first_input=states):
                hidden = trunk(inputs_embeds=states, attention_mask=attention_mask, **no_kv).last_hidden_state
        elif cut is None or not cut.any():  # nothing before the first slot to reuse
            with injector.hooked(self.backbone.layers, slot_ids, rows):
                hidden = trunk(inputs_embeds=self.embed(input_ids, slot_ids, rows), attention_mask=attention_mask,
                               **no_kv).last_hidden_state
        else:
            past, past_mask = cache.past(self.backbone, input_ids, cut)  # no autograd, cached per example
            positions, mask, ids, slots = rest_of(cut, attention_mask, input_ids, slot_ids)
            with injector.hooked(self.backbone.layers, slots, rows):
                hidden = trunk(inputs_embeds=self.embed(ids, slots, rows), position_ids=positions, cache=past,
                               attention_mask=torch.cat([past_mask, mask], 1), use_cache=True).last_hidden_state
            start = answer - cut
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if candidate_tokens is None:
            return self.score(hidden[rows, start])
        return self.score_answers(hidden, start, candidate_tokens, candidate_index)

    def score_answers(self, hidden, start, tokens, index) -> torch.Tensor:
        """Each row's answer log-probability (sum or mean over its tokens), gathered into (example, candidate)."""
        at = (start[:, None] + torch.arange(tokens.shape[1], device=start.device)).clamp(max=hidden.shape[1] - 1)
        logits = self.backbone.head(hidden.gather(1, at[..., None].expand(-1, -1, hidden.shape[-1]))).float()
        real = tokens >= 0
        per_token = (logits.gather(-1, tokens.clamp(min=0)[..., None]).squeeze(-1) - logits.logsumexp(-1)) * real
        total = per_token.sum(1)
        if self.answer_scoring == "mean":
            total = total / real.sum(1)
        return total[index.clamp(min=0)].masked_fill(index < 0, float("-inf"))

    @property
    def late_cache(self):
        """The backbone's late cache, or None where it does not apply (off, or a prompt enters at the input)."""
        applies = self.use_late_cache and self.encoder.n_tokens > 0 and self.injector.first_layer > 0
        return self.backbone.caches.late if applies else None

    @property
    def prefix_cache(self):
        """The backbone's shared prefix cache, or None where it does not apply (off, masked LM, no prompt)."""
        applies = self.use_prefix_cache and self.backbone.causal and self.encoder.n_tokens > 0
        cache = self.backbone.prefix_cache if applies else None
        return cache if cache is not None and cache.supported else None

    def score(self, at_answer: torch.Tensor) -> torch.Tensor:
        head = self.backbone.head
        if not self.cloze and isinstance(head, nn.Linear):
            bias = head.bias[self.label_ids] if head.bias is not None else None
            return nn.functional.linear(at_answer, head.weight[self.label_ids], bias)
        logits = head(at_answer)
        return logits if self.cloze else logits[:, self.label_ids]
