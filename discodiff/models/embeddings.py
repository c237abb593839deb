"""Embeddings of the U-Net: sinusoidal features, the timestep embedding and the learned null conditions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``[N]`` float positions → ``[N, dim]`` float32 features ``[cos(p·ω_k) ‖ sin(p·ω_k)]``.

    Frequencies are ``ω_k = max_period^(−k / (dim/2))`` for ``k = 0 … dim/2 − 1`` (Transformer / DDPM style).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=positions.device) / half
    angles = positions.to(torch.float32)[:, None] * torch.exp(-math.log(max_period) * exponents)[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedding(nn.Module):
    """Continuous diffusion time ``t ∈ [0, 1]`` ``[B]`` → ``[B, embed_dim]``.

    Sinusoidal features of ``t · scale`` (scale 1000 puts ``t`` in the DDPM step range) → Linear → SiLU → Linear.
    """

    def __init__(self, features_dim: int, embed_dim: int, scale: float = 1000.0):
        super().__init__()
        self.features_dim = features_dim
        self.scale = scale
        self.linear_1 = nn.Linear(features_dim, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_embedding(timestep * self.scale, self.features_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(features)))


class NullConditions(nn.Module):
    """Learned null conditions for classifier-free guidance.

    Holds one null sequence ``[null_length_i, context_dim_i]`` per context and, when ``pooled_dim`` is
    set, one null pooled vector ``[pooled_dim]``. Dropped rows are replaced with ``torch.where``, so a
    dropped row carries no trace of its original values and the nulls receive the gradients.
    """

    def __init__(self, context_dims: Sequence[int], null_lengths: Sequence[int], pooled_dim: int | None = None):
        super().__init__()
        self.contexts = nn.ParameterList(
            nn.Parameter(torch.empty(length, dim)) for length, dim in zip(null_lengths, context_dims, strict=True)
        )
        self.pooled = nn.Parameter(torch.empty(pooled_dim)) if pooled_dim is not None else None
        for parameter in self.parameters():
            nn.init.normal_(parameter, std=0.02)

    def context(
        self,
        index: int,
        context: torch.Tensor | None,
        mask: torch.Tensor | None,
        dropped: torch.Tensor | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``index`` with its dropped rows replaced by the null sequence.

        ``context [B, S, D]``, ``mask [B, S]`` bool (True = valid; None = all valid), ``dropped [B]`` bool
        (None = none dropped); ``context=None`` drops every row. Returns ``([B, S', D], [B, S'] bool)`` with
        ``S' = max(S, null_length)``: a dropped row is the null sequence followed by masked zeros.
        """
        null = self.contexts[index]
        null_length = null.shape[0]
        if context is None:
            all_valid = torch.ones(batch_size, null_length, dtype=torch.bool, device=null.device)
            return null.expand(batch_size, -1, -1), all_valid
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        if dropped is None:
            return context, mask
        length = max(context.shape[1], null_length)
        context = F.pad(context, (0, 0, 0, length - context.shape[1]))
        mask = F.pad(mask, (0, length - mask.shape[1]), value=False)
        null_row = F.pad(null.to(context.dtype), (0, 0, 0, length - null_length))
        null_mask = torch.arange(length, device=context.device) < null_length
        context = torch.where(dropped[:, None, None], null_row, context)
        mask = torch.where(dropped[:, None], null_mask, mask)
        return context, mask

    def pooled_vector(self, pooled: torch.Tensor | None, dropped: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``pooled [B, P]`` with dropped rows (``dropped [B]`` bool) set to the null vector; None → all null."""
        if pooled is None:
            return self.pooled.expand(batch_size, -1)
        if dropped is None:
            return pooled
        return torch.where(dropped[:, None], self.pooled.to(pooled.dtype), pooled)
