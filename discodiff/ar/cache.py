"""The preallocated key/value cache of incremental (one step or one chunk at a time) decoding.

Every layer's self-attention keys and values live in buffers ``[B, H, max_length, Dh]`` allocated once when the
cache is made; a forward over positions ``start … start+T−1`` writes its keys and values into those slots by
index and attends to slots ``0 … start+T−1``. Nothing grows by ``torch.cat``, so a step costs the same memory
traffic whatever the length so far, and the buffers keep their storage for the whole generation.

Cross-attention keys and values of the text context are computed on the first forward that gets the cache and
kept here: they do not change from step to step.
"""

from __future__ import annotations

import torch

from ..errors import GenerationError


class KVCache:
    """Per-layer key/value buffers ``[batch_size, n_heads, max_length, head_dim]`` and the number of filled positions.

    Make one with :meth:`ARTransformer.new_cache` (it knows the layer count, heads and widths). ``length`` is the
    number of positions written so far; a forward with the cache continues at ``length`` unless told otherwise.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_length: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if min(n_layers, batch_size, n_heads, max_length, head_dim) < 1:
            raise GenerationError(
                f"KVCache needs positive sizes, got n_layers={n_layers}, batch_size={batch_size}, n_heads={n_heads}, "
                f"max_length={max_length}, head_dim={head_dim}"
            )
        shape = (batch_size, n_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0
        # cross-attention: per layer (keys, values) [B, H, S, Dh], the context's mask [B, S] and the context it came from
        self.context_keys: list[torch.Tensor] | None = None
        self.context_values: list[torch.Tensor] | None = None
        self.context_mask: torch.Tensor | None = None
        self.context_source: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    def check_window(self, start: int, length: int) -> None:
        """Raise :class:`GenerationError` unless positions ``start … start+length−1`` fit and leave no gap."""
        if not 0 <= start <= self.length:
            raise GenerationError(
                f"start={start} must lie in 0 … {self.length} (the positions already in the cache): a cache cannot skip "
                "positions; pass start=None to continue where it stopped"
            )
        if start + length > self.max_length:
            raise GenerationError(
                f"the KV cache is too short: positions {start} … {start + length - 1} do not fit its max_length="
                f"{self.max_length}; make the cache with max_length ≥ {start + length}"
            )

    def update(self, layer: int, start: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``key``/``value [B, H, T, Dh]`` into layer ``layer``'s slots ``start … start+T−1``; return that layer's
        keys and values of positions ``0 … start+T−1`` (views of the buffers, no copy)."""
        end = start + key.shape[2]
        self.keys[layer][:, :, start:end] = key
        self.values[layer][:, :, start:end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reset(self) -> None:
        """Forget every position and the cross-attention context; the buffers are kept for reuse."""
        self.length = 0
        self.context_keys = self.context_values = self.context_mask = self.context_source = None
