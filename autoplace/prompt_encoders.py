"""Prompt encoders: how the trainable prompt vectors are produced (P-tuning's reparametrization).

``none`` trains the vectors directly; ``mlp`` and ``lstm`` (bidirectional LSTM over all prompt tokens, then an MLP,
as in P-tuning) reparametrize them. The reparametrization is residual with a zero-initialised last layer, so at step
0 the prompt equals its initialization (vocabulary rows stay meaningful) and the encoder learns a correction.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ENCODER, ENCODERS, INITS
from .errors import AutoplaceError



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
        features = self.lstm(self.input[None])[0][0] if self.encoder_type == "lstm" else self.input
        return self.input + self.mlp(features)


def init_vectors(embeddings: torch.Tensor, n_tokens: int, init: str, seed: int,
                 word_ids: list[int] | None = None, exclude_ids: list[int] = ()) -> torch.Tensor:
    """Starting prompt vectors: embedding rows (sampled, or the given words' ids) or random at the embedding norm."""
    if init not in INITS:
        raise AutoplaceError(f"unknown init {init!r} (use {', '.join(INITS)})")
    weight = embeddings.detach().float().cpu()
    generator = torch.Generator().manual_seed(seed)
    if init == "random":
        vectors = torch.randn(n_tokens, weight.shape[1], generator=generator)
        return vectors / vectors.norm(dim=1, keepdim=True) * weight.norm(dim=1).mean()
    if word_ids:
        ids = torch.tensor([word_ids[i % len(word_ids)] for i in range(n_tokens)])
    else:
        allowed = torch.ones(weight.shape[0], dtype=torch.bool)
        allowed[list(exclude_ids)] = False
        pool = allowed.nonzero().flatten()
        ids = pool[torch.randint(len(pool), (n_tokens,), generator=generator)]
    return weight[ids].clone()
