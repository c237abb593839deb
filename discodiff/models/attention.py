"""Attention layers of the 1D U-Net: multi-head (cross-)attention and a pre-norm transformer block.

Latent tokens get an absolute sinusoidal position added to their queries and keys (DETR style: values
stay position-free, the residual stream is untouched). Positions count frames of the U-Net input, so
level ``ℓ`` token ``i`` sits at frame ``i · 2^ℓ``; a caller that adds
``sinusoidal_embedding(frame_index, dim)`` to a time-aligned context (e.g. vocal features) gives
cross-attention what it needs to learn the alignment. Contexts carry their own positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .embeddings import sinusoidal_embedding


class Attention(nn.Module):
    """Multi-head attention of ``[B, L, dim]`` queries over themselves or over a ``[B, S, context_dim]`` context."""

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"attention_head_dim={head_dim} must divide the attention width {dim}")
        self.heads = dim // head_dim
        key_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(key_dim, dim, bias=False)
        self.to_v = nn.Linear(key_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states [B, L, dim]``, ``positions [L, dim]`` → ``[B, L, dim]``.

        ``context [B, S, context_dim]`` (None = self-attention), ``context_mask [B, S]`` bool (True = attend).
        """
        query = self.to_q(hidden_states + positions)
        if context is None:
            key, value = self.to_k(hidden_states + positions), self.to_v(hidden_states)
        else:
            key, value = self.to_k(context), self.to_v(context)
        query, key, value = (rearrange(x, "b n (h d) -> b h n d", h=self.heads) for x in (query, key, value))
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Module):
    """``[B, L, dim]`` → ``[B, L, dim]``: Linear → GELU → dropout → Linear (zero-initialised)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.net(hidden_states)


class TransformerBlock1D(nn.Module):
    """Pre-norm residual block on ``[B, C, L]`` latents: self-attention (optional), one cross-attention per
    context (each projected from its own width), feed-forward. Starts as the identity (zero-initialised outputs).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int,
        self_attention: bool,
        context_dims: Sequence[int],
        frame_stride: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.frame_stride = frame_stride
        self.self_attention = Attention(dim, head_dim) if self_attention else None
        self.self_attention_norm = nn.LayerNorm(dim) if self_attention else None
        self.cross_attentions = nn.ModuleList(Attention(dim, head_dim, context_dim) for context_dim in context_dims)
        self.cross_attention_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in context_dims)
        self.feed_forward = FeedForward(dim, dropout=dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)

    def forward(
        self, hidden_states: torch.Tensor, contexts: Sequence[torch.Tensor], context_masks: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``hidden_states [B, C, L]`` → ``[B, C, L]``.

        ``contexts[i] [B, S_i, D_i]`` with bool ``context_masks[i] [B, S_i]`` (True = valid token), one per
        ``context_dims`` entry; a block built without cross-attention ignores them.
        """
        x = rearrange(hidden_states, "b c l -> b l c")
        frames = torch.arange(x.shape[1], device=x.device) * self.frame_stride
        positions = sinusoidal_embedding(frames, x.shape[-1]).to(x.dtype)
        if self.self_attention is not None:
            x = x + self.self_attention(self.self_attention_norm(x), positions)
        if len(self.cross_attentions):
            layers = zip(self.cross_attentions, self.cross_attention_norms, contexts, context_masks, strict=True)
            for attention, norm, context, mask in layers:
                x = x + attention(norm(x), positions, context, mask)
        x = x + self.feed_forward(self.feed_forward_norm(x))
        return rearrange(x, "b l c -> b c l")
