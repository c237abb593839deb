"""T5 relative position bias, causal: bucketing of key−query offsets and the one bias table shared by all layers.

T5 (Raffel et al. 2020, after Mesh TensorFlow) adds to every attention logit a learned scalar per head that
depends only on the *bucket* of the offset ``key_position − query_position``. In the causal (unidirectional)
variant only the distance back, ``n = max(query − key, 0)``, counts: half the buckets hold the distances
``0 … num_buckets/2 − 1`` exactly, the other half cover ``num_buckets/2 … max_distance`` logarithmically, and every
distance from ``max_distance`` on shares the last bucket. Future keys (offset > 0) map to bucket 0 and are masked
by the causal mask anyway.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """Causal T5 bucket of each offset ``key_position − query_position`` (int tensor, any shape) → same shape, long,
    in ``[0, num_buckets)``.

    The same arithmetic, in the same order, as ``T5Attention._relative_position_bucket(..., bidirectional=False)``
    in transformers, so the buckets agree exactly.
    """
    distance = (-relative_position).clamp(min=0).long()
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # clamp(min=max_exact) only keeps log(0) out of the branch that `is_small` discards; large distances are unchanged
    large = max_exact + (
        torch.log(distance.clamp(min=max_exact).float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """The learned ``[num_buckets, n_heads]`` bias table; one instance serves every layer of the transformer."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.table = nn.Embedding(num_buckets, n_heads)

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``query_positions [Tq]``, ``key_positions [Tk]`` (absolute, long) → float additive attention mask
        ``[1, H, Tq, Tk]``: the bias of each offset, ``−inf`` where the key lies after the query (causal)."""
        offsets = key_positions[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(offsets, self.num_buckets, self.max_distance)
        bias = self.table(buckets).permute(2, 0, 1)  # [H, Tq, Tk]
        bias = bias.masked_fill(offsets > 0, float("-inf"))
        return bias[None]
