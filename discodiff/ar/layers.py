"""Layers of the AR transformer: QK-normed self- and cross-attention through SDPA, the GEGLU feed-forward, and the
pre-norm decoder block that strings them together.

All projections are bias-free (PaLM). Queries and keys are RMS-normalised over the head dimension before the dot
product (QK-norm, as HAFM): the logits stay bounded, so training tolerates higher learning rates and low precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache

NORM_EPS = 1e-6


def geglu_inner_dim(d_model: int) -> int:
    """Inner width of the GEGLU feed-forward: ``2/3 · 4 · d_model`` rounded to a multiple of 8 (same parameter count
    as a 4× GELU MLP, since GEGLU has three matrices instead of two)."""
    return max(8, 8 * round(2 * 4 * d_model / 3 / 8))


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, H·Dh]`` → ``[B, H, T, Dh]``."""
    batch, length, width = x.shape
    return x.view(batch, length, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, Dh]`` → ``[B, T, H·Dh]``."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with QK-norm; positions enter only through the additive ``bias`` mask."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        head_dim = d_model // n_heads
        self.to_qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None = None, layer: int = 0, start: int = 0
    ) -> torch.Tensor:
        """``x [B, T, D]`` (positions ``start … start+T−1``), ``bias [1, H, T, T_k]`` float (relative bias, ``−inf`` on
        future keys) → ``[B, T, D]``.

        Without a cache the keys are these ``T`` positions (``T_k = T``); with one, this call's keys and values are
        written into layer ``layer``'s slots and the queries attend to all ``T_k = start+T`` cached positions.
        """
        query, key, value = (split_heads(part, self.n_heads) for part in self.to_qkv(x).chunk(3, dim=-1))
        query, key = self.q_norm(query), self.k_norm(key)
        if cache is not None:
            key, value = cache.update(layer, start, key, value)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout)
        return self.to_out(merge_heads(out))


class CrossAttention(nn.Module):
    """Multi-head attention of ``[B, T, D]`` queries over a ``[B, S, context_dim]`` context, with QK-norm.

    The context's keys and values come from :meth:`project_context` (once per cache when decoding). A row whose
    context has no valid token gets a zero output: an empty context means "no text", not NaN.
    """

    def __init__(self, d_model: int, n_heads: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        head_dim = d_model // n_heads
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def project_context(self, context: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``context [B, S, context_dim]``, ``mask [B, S]`` bool (True = valid) → normed keys and values ``[B, H, S, Dh]``.

        Padded positions are zeroed first, so whatever they hold cannot reach the output by any kernel's arithmetic.
        """
        context = context.masked_fill(~mask[..., None], 0.0)
        key, value = (split_heads(part, self.n_heads) for part in self.to_kv(context).chunk(2, dim=-1))
        return self.k_norm(key), value

    def forward(self, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]``, ``key``/``value [B, H, S, Dh]`` from :meth:`project_context`, ``mask [B, S]`` bool
        → ``[B, T, D]``."""
        present = mask.any(dim=1)  # [B]: rows with at least one valid context token
        attend = (mask | ~present[:, None])[:, None, None, :]  # an empty row attends to its zeroed padding, then is zeroed
        query = self.q_norm(split_heads(self.to_q(x), self.n_heads))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attend, dropout_p=dropout)
        return self.to_out(merge_heads(out)) * present[:, None, None].to(x.dtype)


class GEGLUFeedForward(nn.Module):
    """``[B, T, D]`` → ``[B, T, D]``: ``W_out · (GELU(W_gate x) ⊙ W_in x)`` with inner width :func:`geglu_inner_dim`."""

    def __init__(self, d_model: int, dropout: float = 0.0):
        super().__init__()
        inner = geglu_inner_dim(d_model)
        self.to_gate_and_input = nn.Linear(d_model, 2 * inner, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, hidden = self.to_gate_and_input(x).chunk(2, dim=-1)
        return self.to_out(self.dropout(F.gelu(gate) * hidden))


class DecoderBlock(nn.Module):
    """Pre-norm block: ``x + SelfAttn(RMSNorm x)``, then ``+ CrossAttn(RMSNorm x, context)`` when the model has a
    context width, then ``+ GEGLU(RMSNorm x)``; dropout on each residual branch."""

    def __init__(self, d_model: int, n_heads: int, context_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.self_attention_norm = nn.RMSNorm(d_model, eps=NORM_EPS)
        self.self_attention = SelfAttention(d_model, n_heads, dropout)
        if context_dim:
            self.cross_attention_norm = nn.RMSNorm(d_model, eps=NORM_EPS)
            self.cross_attention = CrossAttention(d_model, n_heads, context_dim, dropout)
        else:
            self.cross_attention_norm = self.cross_attention = None
        self.feed_forward_norm = nn.RMSNorm(d_model, eps=NORM_EPS)
        self.feed_forward = GEGLUFeedForward(d_model, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        context_key: torch.Tensor | None = None,
        context_value: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
    ) -> torch.Tensor:
        """``x [B, T, D]`` → ``[B, T, D]``; ``bias`` as in :class:`SelfAttention`, the context's keys/values/mask as in
        :class:`CrossAttention` (None = no cross-attention this call)."""
        x = x + self.dropout(self.self_attention(self.self_attention_norm(x), bias, cache, layer, start))
        if self.cross_attention is not None and context_key is not None:
            attended = self.cross_attention(self.cross_attention_norm(x), context_key, context_value, context_mask)
            x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
