"""The late-prompt cache: when every prompt enters at layer k or deeper, the layers below k run once per example.

Below layer k the slot positions hold their filler token and nothing depends on the prompt, and the backbone is
frozen, so the hidden states at layer k's input are fixed per example. They are computed once (under ``no_grad``,
running the trunk no higher than layer k) and kept, keyed by the example's token ids, the layer and the autocast
precision, for every later step, evaluation and trial on the same backbone. A forward then runs layers k and up only,
and back-propagates through them only (Late Prompt Tuning's saving). Masked and causal LMs alike.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .injection import layer_inputs

DEFAULT_MAX_BYTES = 1 << 30  # per backbone; least recently used examples are dropped beyond it


class LateCache:
    """Hidden states at one layer's input on one frozen backbone: (layer, precision, token ids) -> (length, hidden)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.bytes = self.hits = self.misses = 0

    def clear(self) -> None:
        self.store.clear()
        self.bytes = 0

    def states(self, backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """(batch, width, hidden): each row's hidden states at `layer`'s input, zeros at its pads."""
        device = input_ids.device
        precision = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        lengths = attention_mask.sum(1).tolist()
        keys = [(layer, precision, tuple(row[:n])) for row, n in zip(input_ids.tolist(), lengths)]
        missing = [r for r, k in enumerate(keys) if k not in self.store and k not in keys[:r]]
        self.misses += sum(k not in self.store for k in keys)
        self.hits += sum(k in self.store for k in keys)
        if missing:
            rows = torch.tensor(missing, device=device)
            width = max(lengths[r] for r in missing)
            computed = layer_inputs(backbone.trunk, backbone.layers, [layer], input_ids=input_ids[rows, :width],
                                    attention_mask=attention_mask[rows, :width])[layer]
            for i, r in enumerate(missing):
                self.store[keys[r]] = computed[i, :lengths[r]].clone()
                self.bytes += self.store[keys[r]].numel() * self.store[keys[r]].element_size()
        for key in keys:
            self.store.move_to_end(key)
        stored = [self.store[k] for k in keys]
        while self.bytes > self.max_bytes and len(self.store) > len(set(keys)):  # this batch's are the newest
            dropped = self.store.popitem(last=False)[1]
            self.bytes -= dropped.numel() * dropped.element_size()
        out = stored[0].new_zeros(len(keys), input_ids.shape[1], stored[0].shape[-1])
        for row, tensor in enumerate(stored):
            out[row, :len(tensor)] = tensor
        return out
