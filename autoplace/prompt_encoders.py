"""Prompt encoders: how the trainable prompt vectors are produced (P-tuning's reparametrization).

``none`` trains the vectors directly; ``mlp`` and ``lstm`` (bidirectional LSTM over all prompt tokens, then an MLP,
as in P-tuning) reparametrize them. The reparametrization is residual with a zero-initialised last layer, so at step
0 the prompt equals its initialization (vocabulary rows stay meaningful) and the encoder learns a correction.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import cpu_has_bf16
from .config import ENCODER, ENCODERS, INITS
from .errors import AutoplaceError
from .injection import layer_inputs



class PromptEncoder(nn.Module):
    def __init__(self, init_vectors: torch.Tensor, encoder_type: str = ENCODER):
        super().__init__()
        if encoder_type not in ENCODERS:
            raise AutoplaceError(f"unknown encoder {encoder_type!r} (use {', '.join(ENCODERS)})")
        self.encoder_type = encoder_type
        n_tokens, hidden = init_vectors.shape
        self.input = nn.Parameter(init_vectors.detach().clone().float())
        if encoder_type == "lstm":
            self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
        if encoder_type != "none":
            in_size = 2 * (hidden // 2) if encoder_type == "lstm" else hidden
            self.mlp = nn.Sequential(nn.Linear(in_size, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    @property
    def n_tokens(self) -> int:
        return self.input.shape[0]

    def forward(self) -> torch.Tensor:
        """All prompt vectors, shape (n_tokens, hidden)."""
        if self.encoder_type == "none":
            return self.input
        features = self._lstm(self.input[None])[0][0] if self.encoder_type == "lstm" else self.input
        return self.input + self.mlp(features)

    def _lstm(self, sequence: torch.Tensor):
        """oneDNN has no bf16 LSTM on a CPU without bf16 instructions ("could not create a primitive descriptor"):
        there this small LSTM runs in fp32 and the rest of the step in the backbone's precision."""
        if sequence.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not cpu_has_bf16():
            with torch.autocast("cpu", enabled=False):
                return self.lstm(sequence.float())
        return self.lstm(sequence)


def init_token_ids(backbone, n_tokens: int, init: str, seed: int, word_ids: list[int] | None = None,
                   exclude_ids: list[int] = ()) -> torch.Tensor:
    """Each prompt token's vocabulary id: the given words' in turn, else sampled (never a special token). A random
    init draws them from its own stream, so its vectors are those of a template without depths."""
    if init not in INITS:
        raise AutoplaceError(f"unknown init {init!r} (use {', '.join(INITS)})")
    if word_ids:
        return torch.tensor([word_ids[i % len(word_ids)] for i in range(n_tokens)], dtype=torch.long)
    allowed = torch.ones(backbone.vocab_size, dtype=torch.bool)
    allowed[list(exclude_ids)] = False
    pool = allowed.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed + (init == "random"))
    return pool[torch.randint(len(pool), (n_tokens,), generator=generator)]


def init_vectors(backbone, rows: list[tuple[int, int]], init: str, seed: int, ids: torch.Tensor) -> torch.Tensor:
    """Starting prompt rows, one per (token, layer): what a real token looks like where it enters (`vocab`: token
    ids[t]'s embedding row at the input, its hidden state at a deeper layer's input), or random at that place's
    typical norm. A token's id serves all of its layers."""
    weight = backbone.embeddings.weight.detach().float().cpu()
    at_layer = {0: weight[ids]} | _hidden_states_of(backbone, ids, sorted({layer for _, layer in rows} - {0}))
    if not rows:
        return weight[:0].clone()
    if init == "random":
        vectors = torch.randn(len(rows), weight.shape[1], generator=torch.Generator().manual_seed(seed))
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
        norms = {0: weight.norm(dim=1).mean()} | {layer: h.norm(dim=1).mean() for layer, h in at_layer.items() if layer}
        return torch.stack([vectors[row] * norms[layer] for row, (_, layer) in enumerate(rows)])
    return torch.stack([at_layer[layer][token] for token, layer in rows]).clone()


def _hidden_states_of(backbone, ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Each id's hidden state at each layer's input, read in one sequence after a pad token (the first position of
    a causal LM is an attention sink, unlike any other)."""
    if not layers:
        return {}
    sequence = torch.cat([torch.tensor([backbone.tokenizer.pad_token_id]), ids])[None].to(backbone.device)
    seen = layer_inputs(backbone.trunk, backbone.layers, layers, input_ids=sequence,
                        attention_mask=torch.ones_like(sequence))
    return {layer: seen[layer][0, 1:].float().cpu() for layer in layers}
