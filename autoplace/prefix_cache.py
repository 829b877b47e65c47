"""The causal prefix key/value cache: text before an example's first prompt slot runs once, without autograd.

In a causal LM nothing before the first prompt token depends on the prompt, and the backbone is frozen, so the
key/values of that prefix are fixed per example. They are computed once (batched, under ``no_grad``) and kept, keyed
by the prefix's token ids, for every later step, evaluation and template on the same backbone. A forward then runs
only the rest of each example (from its first slot to its end) with autograd, on top of the cached prefixes.

Batch layout of a cached forward (prefix lengths differ per example)::

    past (cached, left-padded to the longest prefix) | rest (with autograd, right-padded to the longest rest)
    0 0 p p p p                                      | P P t t t a 0 0
    p p p p p p                                      | P P t a 0 0 0 0

The attention mask covers both parts (zeros at the pads); the rest's position ids continue each example's own prefix
(prefix length + offset), so every real token sees exactly what it sees in the uncached forward.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .featurize import NO_SLOT

DEFAULT_MAX_BYTES = 1 << 30  # per backbone; least recently used prefixes are dropped beyond it


class PrefixCache:
    """Key/values of prefixes on one frozen causal backbone: token ids -> (layers, 2, kv heads, length, head dim)."""

    def __init__(self, trunk: torch.nn.Module, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.bytes = self.hits = self.misses = 0
        self.supported = _supported(trunk)

    def clear(self) -> None:
        self.store.clear()
        self.bytes = 0

    def past(self, backbone, input_ids: torch.Tensor, cut: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
        """A fresh cache holding each row's prefix input_ids[row, :cut[row]], left-padded; and its attention mask."""
        keys = [(_precision(input_ids.device), tuple(row[:n])) for row, n in zip(input_ids.tolist(), cut.tolist())]
        unique = [k for k in dict.fromkeys(keys) if k[1]]  # rows whose first token is a slot have no prefix
        missing = [k for k in unique if k not in self.store]
        self.misses += sum(k in missing for k in keys)
        self.hits += sum(k in self.store for k in keys)
        for k in unique:
            if k in self.store:
                self.store.move_to_end(k)
        self._fill(backbone, missing)
        stored = [self.store.get(k) for k in keys]
        while self.bytes > self.max_bytes and len(self.store) > len(unique):  # this batch's prefixes are the newest
            self.bytes -= _nbytes(self.store.popitem(last=False)[1])

        width = int(cut.max())
        layers, _, heads, _, dim = self.store[unique[0]].shape
        kv = self.store[unique[0]].new_zeros(len(keys), layers, 2, heads, width, dim)
        for row, tensor in enumerate(stored):
            if tensor is not None:
                kv[row, ..., width - tensor.shape[-2]:, :] = tensor
        mask = torch.arange(width, device=cut.device) >= (width - cut)[:, None]
        return DynamicCache([(kv[:, i, 0], kv[:, i, 1]) for i in range(layers)]), mask.long()

    @torch.no_grad()
    def _fill(self, backbone, missing: list[tuple]) -> None:
        """Run the missing prefixes in one right-padded batch and store each one's key/values, trimmed."""
        if not missing:
            return
        width, device = max(len(ids) for _, ids in missing), backbone.device
        ids = torch.full((len(missing), width), backbone.tokenizer.pad_token_id, dtype=torch.long)
        for row, (_, prefix) in enumerate(missing):
            ids[row, :len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        mask = (torch.arange(width) < torch.tensor([len(p) for _, p in missing])[:, None]).long()
        out = backbone.trunk(input_ids=ids.to(device), attention_mask=mask.to(device),
                             position_ids=torch.arange(width, device=device)[None], use_cache=True)
        kv = torch.stack([torch.stack([layer.keys, layer.values], 1) for layer in out.cache.layers], 1)
        for row, key in enumerate(missing):
            self.store[key] = kv[row, ..., :len(key[1]), :].clone()
            self.bytes += _nbytes(self.store[key])


def first_slot(slot_ids: torch.Tensor) -> torch.Tensor:
    """Per row: the position of its first prompt token (the length of the prompt-free prefix)."""
    is_slot = slot_ids != NO_SLOT
    return torch.where(is_slot.any(1), is_slot.int().argmax(1), torch.zeros_like(slot_ids[:, 0]))


def rest_of(cut: torch.Tensor, attention_mask: torch.Tensor, *columns: torch.Tensor, fill=(0, NO_SLOT)):
    """Each row from its cut to its end, right-padded, in one gather: (positions, mask, *columns)."""
    lengths = attention_mask.sum(1)
    width = int((lengths - cut).max())
    index = cut[:, None] + torch.arange(width, device=cut.device)
    valid = index < lengths[:, None]
    index = index.clamp(max=attention_mask.shape[1] - 1)  # pads keep a position in range; the mask hides them
    gathered = [torch.where(valid, col.gather(1, index), value) for col, value in zip(columns, fill)]
    return index, valid.long(), *gathered


def _supported(trunk: torch.nn.Module) -> bool:
    """Full attention in every layer (no sliding windows), through the transformers 5 ``cache=`` interface."""
    try:
        layers = DynamicCache(config=trunk.config).layers
        takes_cache = "cache" in inspect.signature(trunk.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return takes_cache and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _precision(device: torch.device):
    """Key/values computed under autocast differ from full-precision ones; keep them apart."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
