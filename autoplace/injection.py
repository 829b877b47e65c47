"""Where in depth each prompt vector enters: the input embeddings, one layer's input, or every layer's.

The prompt encoder produces one row per (prompt token, layer it enters at). ``Injector`` knows which row goes where:
at layer l, the hidden state at each slot position of a token that enters there is replaced by that token's row. The
input layer (l = 0) is the embedding step; deeper layers are reached by forward pre-hooks on the backbone's layers,
registered for one forward only (the backbone is shared by every model on it) and removed after it.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from .featurize import NO_SLOT
from .template import Template


def rows_per_layer(template: Template, n_layers: int) -> list[tuple[int, int]]:
    """The encoder's rows in order: (prompt token, layer) for each row, token-major (a token's rows are adjacent)."""
    rows, token = [], 0
    for slot in template.slots:
        for _ in range(slot.length):
            rows += [(token, layer) for layer in slot.layers(n_layers)]
            token += 1
    return rows


class Injector(nn.Module):
    """Places prompt rows into hidden states at their layers, in one vectorised step per layer."""

    def __init__(self, rows: list[tuple[int, int]], n_tokens: int, n_layers: int):
        super().__init__()
        select = torch.zeros(n_layers, n_tokens, max(1, len(rows)))
        for row, (token, layer) in enumerate(rows):
            select[layer, token, row] = 1.0
        # select[l] @ rows: each token's vector at layer l (zero where it does not enter there); a matmul, not a
        # gather, so the backward sums in a fixed order (see PromptedModel.embed)
        self.register_buffer("select", select, persistent=False)
        self.register_buffer("enters", select.sum(-1) > 0, persistent=False)  # (layer, token)
        self.layers = sorted({layer for _, layer in rows})

    @property
    def first_layer(self) -> int:
        """The lowest layer any prompt enters at: the hidden states below it do not depend on the prompt."""
        return self.layers[0] if self.layers else 0

    def place(self, hidden: torch.Tensor, slot_ids: torch.Tensor, rows: torch.Tensor, layer: int) -> torch.Tensor:
        """hidden with the slot positions of tokens entering at `layer` replaced by their rows."""
        if layer not in self.layers:
            return hidden
        token = slot_ids.clamp(min=0)
        here = ((slot_ids != NO_SLOT) & self.enters[layer][token]).unsqueeze(-1)
        # full precision: the prompt enters the residual stream unrounded
        with torch.autocast(hidden.device.type, enabled=False):
            vectors = self.select[layer].to(rows.dtype) @ rows
            placed = F.one_hot(token, vectors.shape[0]).to(rows.dtype) @ vectors
        return torch.where(here, placed.to(hidden.dtype), hidden)

    @contextlib.contextmanager
    def hooked(self, layers: nn.ModuleList, slot_ids: torch.Tensor, rows: torch.Tensor, offset: int = 0,
               first_input: torch.Tensor | None = None):
        """Pre-hooks on layers[i] that place the rows of layer offset + i (offset: the layers below were cut off).
        first_input, when given, replaces layers[0]'s input first (the late cache's stored hidden states)."""
        def hook_for(layer):
            def hook(module, args, kwargs):
                hidden = first_input if layer == offset and first_input is not None else _hidden(args, kwargs)
                return _with_hidden(args, kwargs, self.place(hidden, slot_ids, rows, layer))
            return hook

        wanted = {layer for layer in self.layers if layer >= offset and layer > 0}
        if first_input is not None:
            wanted.add(offset)
        handles = [layers[layer - offset].register_forward_pre_hook(hook_for(layer), with_kwargs=True)
                   for layer in sorted(wanted)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class Stop(Exception):
    """Raised by a capturing hook once it has what it came for: the layers above need not run."""


@torch.no_grad()
def layer_inputs(trunk: nn.Module, layers: nn.ModuleList, wanted: list[int], **inputs) -> dict[int, torch.Tensor]:
    """The hidden states at the input of each wanted layer, running the trunk no higher than the deepest one."""
    seen: dict[int, torch.Tensor] = {}

    def capture(layer):
        def hook(module, args, kwargs):
            seen[layer] = _hidden(args, kwargs).detach()
            if layer == max(wanted):
                raise Stop
        return hook

    handles = [layers[layer].register_forward_pre_hook(capture(layer), with_kwargs=True) for layer in set(wanted)]
    try:
        trunk(**inputs)
    except Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen
