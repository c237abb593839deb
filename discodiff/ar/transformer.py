"""The decoder-only transformer of the AR family: codec (or semantic) tokens ``[B, K, T]`` → logits ``[B, K, T, V]``.

Layout: per-codebook input embeddings summed per time step, plus one embedding per time-aligned condition stream
(each conditioning source has its own table) → ``n_layers`` pre-norm blocks (:class:`~discodiff.ar.layers.DecoderBlock`: causal self-attention with QK-norm and
the T5 relative position bias, optional cross-attention to a text context, GEGLU feed-forward) → RMSNorm → one
output head per codebook. One relative-bias table (32 causal buckets) is shared by every layer; there are no
absolute positions.

**Codebook patterns.** Summing the ``K`` embeddings of a time step and predicting ``K`` tokens per step is what
MusicGen's delay pattern needs (codebook ``k`` shifted right by ``k`` steps, the holes filled with
:attr:`ARTransformer.empty_token_id`). HAFM's interleaved flattening is the same model with ``K = 1``: the caller
feeds the flattened stream. Building the patterns is not this module's job.

**Text by cross-attention, not as a prefix** (MusicGen's choice). A prefix of 100+ text tokens would lengthen
every self-attention of every sampled step by that much, in compute and in KV-cache memory, and would spend
positions of ``max_length`` and of the relative-bias range on text. Cross-attention keys and values of the text
are computed once per cache (:class:`~discodiff.ar.cache.KVCache`) and reused by every step. A row whose context has no valid token (all-False
mask) gets no cross-attention contribution, so "no text" for classifier-free guidance is an empty mask.

**Time-aligned conditions as summed streams, not as a prefix.** HAFM puts the vocal's semantic tokens before the
target as a prefix segment. With a relative position bias only, a target step then finds "its" prefix token at an
offset of (prefix length − its own position + …) steps: hundreds of steps away for a few seconds of audio, where T5's
log-spaced buckets are tens of steps wide or all one bucket past ``rel_max_distance``. The model cannot locate the
aligned frame by position, and the prefix doubles every sequence. So a condition that is aligned in time (the vocal's
semantic tokens, the accompaniment's semantic tokens for the coarse stage, the coarse codes for the fine stage) is
resampled to the target's steps by time (:func:`~discodiff.ar.patterns.align_by_time`) and its embedding is added at
each step (``conditions [B, C, T]``, one table per stream; id ``vocab`` of a stream is its learned null, the dropped
condition of classifier-free guidance). The stream is known in full before sampling starts, so the causal model sees
each condition at the step that predicts its frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import ConfigError, GenerationError
from .cache import KVCache
from .layers import NORM_EPS, DecoderBlock
from .position import RelativePositionBias

INIT_STD = 0.02


@dataclass
class ARTransformerOutput(BaseOutput):
    """``logits [B, K, T, vocab_size]``: per codebook and position, the next-token logits (float, model dtype)."""

    logits: torch.Tensor


class ARTransformer(ModelMixin, ConfigMixin):
    """Decoder-only transformer over ``K`` parallel token streams with time-aligned condition streams and optional text
    cross-attention; incremental decoding through a preallocated :class:`KVCache`.

    Args:
        n_codebooks: ``K``, token streams per time step (from the codec, or 1 for a flattened/semantic stream).
        vocab_size: ``V``, tokens per codebook (the codebook size); id ``V`` is the empty/padding token.
        d_model: residual width.
        n_layers: decoder blocks.
        n_heads: attention heads (must divide ``d_model``).
        condition_vocab_sizes: one entry per time-aligned condition stream: its vocabulary; id ``vocab`` of the
            stream is its learned null (empty list = no condition streams).
        context_dim: width of the text context for cross-attention; 0 or None = no cross-attention.
        max_length: the most positions (time steps) one sequence may have.
        rel_buckets: buckets of the causal T5 relative position bias.
        rel_max_distance: distance from which every offset shares the last bucket.
        dropout: dropout of attention weights and residual branches (training only).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        n_codebooks: int = 9,
        vocab_size: int = 1024,
        d_model: int = 512,
        n_layers: int = 8,
        n_heads: int = 8,
        condition_vocab_sizes: tuple[int, ...] | list[int] = (),
        context_dim: int | None = None,
        max_length: int = 2048,
        rel_buckets: int = 32,
        rel_max_distance: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        positive = dict(n_codebooks=n_codebooks, vocab_size=vocab_size, d_model=d_model, n_layers=n_layers,
                        n_heads=n_heads, max_length=max_length)
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ARTransformer {name} must be a positive integer, got {value!r}")
        condition_vocab_sizes = list(condition_vocab_sizes)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in condition_vocab_sizes):
            raise ConfigError(
                f"ARTransformer condition_vocab_sizes must be positive integers (one per stream), got {condition_vocab_sizes!r}"
            )
        if d_model % n_heads:
            raise ConfigError(f"ARTransformer n_heads={n_heads} must divide d_model={d_model}")
        if context_dim is not None and (not isinstance(context_dim, int) or context_dim < 0):
            raise ConfigError(
                f"ARTransformer context_dim must be a non-negative integer (0/None = no text), got {context_dim!r}"
            )
        if not isinstance(rel_buckets, int) or rel_buckets < 2:
            raise ConfigError(f"ARTransformer rel_buckets must be an integer ≥ 2, got {rel_buckets!r}")
        if not isinstance(rel_max_distance, int) or rel_max_distance <= rel_buckets // 2:
            raise ConfigError(
                f"ARTransformer rel_max_distance must exceed rel_buckets // 2 = {rel_buckets // 2} (the exact buckets), "
                f"got {rel_max_distance!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"ARTransformer dropout must be in [0, 1), got {dropout!r}")

        self.gradient_checkpointing = False
        # one table for all codebooks: codebook k's token t is row k·(V+1) + t; row k·(V+1) + V is its empty token
        self.token_embedding = nn.Embedding(n_codebooks * (vocab_size + 1), d_model)
        # one table for all condition streams: stream c's id i is row offset_c + i; row offset_c + vocab_c is its null
        self.condition_embedding = nn.Embedding(sum(v + 1 for v in condition_vocab_sizes), d_model) \
            if condition_vocab_sizes else None
        self.position_bias = RelativePositionBias(n_heads, rel_buckets, rel_max_distance)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, n_heads, context_dim, dropout) for _ in range(n_layers))
        self.norm_out = nn.RMSNorm(d_model, eps=NORM_EPS)
        self.heads = nn.Parameter(torch.empty(n_codebooks, vocab_size, d_model))  # one [V, D] output head per codebook
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 style: N(0, 0.02) everywhere, residual output projections scaled by ``1/√(2·n_layers)``."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)
        for block in self.blocks:
            outputs = [block.self_attention.to_out, block.feed_forward.to_out]
            if block.cross_attention is not None:
                outputs.append(block.cross_attention.to_out)
            for linear in outputs:
                nn.init.normal_(linear.weight, std=residual_std)
        nn.init.normal_(self.heads, std=INIT_STD)

    @classmethod
    def count_parameters(cls, **config) -> int:
        """Parameter count of a model with this config, built on the meta device (no memory is allocated)."""
        with torch.device("meta"):
            return cls(**config).num_parameters()

    @property
    def empty_token_id(self) -> int:
        """The token id (``vocab_size``) that marks an empty position of a codebook (delay-pattern holes, padding)."""
        return self.config.vocab_size

    @property
    def condition_null_ids(self) -> list[int]:
        """Per condition stream, the id of its learned null (its vocabulary size): a dropped condition."""
        return list(self.config.condition_vocab_sizes)

    @property
    def head_dim(self) -> int:
        return self.config.d_model // self.config.n_heads

    def new_cache(
        self,
        batch_size: int,
        max_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences of up to ``max_length`` (default: the model's)
        positions, on the model's device and dtype unless told otherwise."""
        max_length = self.config.max_length if max_length is None else max_length
        if not 1 <= max_length <= self.config.max_length:
            raise GenerationError(
                f"cache max_length must be in 1 … {self.config.max_length} (the model's max_length), got {max_length}"
            )
        weight = self.token_embedding.weight
        return KVCache(self.config.n_layers, batch_size, self.config.n_heads, max_length, self.head_dim,
                       device=device or weight.device, dtype=dtype or weight.dtype)

    def forward(
        self,
        tokens: torch.Tensor,
        conditions: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int | None = None,
        return_dict: bool = True,
    ) -> ARTransformerOutput | tuple[torch.Tensor]:
        """Logits ``[B, K, T, vocab_size]`` for positions ``start … start+T−1``.

        Args:
            tokens: ``[B, K, T]`` integer ids in ``0 … vocab_size`` (``vocab_size`` = :attr:`empty_token_id`).
            conditions: ``[B, C, T]`` integer ids of the ``C`` time-aligned condition streams at these positions, stream
                ``c`` in ``0 … condition_vocab_sizes[c]`` (the last = its learned null); None for a model without streams.
            context: ``[B, S, context_dim]`` text context (models with cross-attention); None = no text. With a
                cache, pass it on the cache's first forward (its keys/values are then kept) and afterwards either
                the same tensor or None.
            context_mask: ``[B, S]`` bool, True = valid token; None = all valid. An all-False row = no text.
            cache: a :class:`KVCache` from :meth:`new_cache`; only the ``T`` new positions are computed, attending to
                every cached one, and the cache's ``length`` becomes ``start + T``.
            start: position of ``tokens[..., 0]``; None = ``cache.length`` (0 without a cache). With a cache it may
                rewind (``start < cache.length`` overwrites from there) but not skip.
            return_dict: return :class:`ARTransformerOutput` (else a 1-tuple).
        """
        batch_size, length = self._check_tokens(tokens)
        conditions = self._check_conditions(conditions, batch_size, length)
        if cache is not None:
            if cache.n_layers != self.config.n_layers or cache.batch_size != batch_size:
                raise GenerationError(
                    f"the KV cache holds {cache.n_layers} layers × batch {cache.batch_size}, but the model has "
                    f"{self.config.n_layers} layers and tokens a batch of {batch_size}; "
                    f"make it with model.new_cache({batch_size})"
                )
            start = cache.length if start is None else start
            cache.check_window(start, length)
        else:
            start = 0 if start is None else start
            if start < 0 or start + length > self.config.max_length:
                raise GenerationError(
                    f"tokens cover positions {start} … {start + length - 1}, beyond max_length={self.config.max_length} "
                    f"(T={length}); shorten the input or build the model with a larger max_length"
                )
        context_keys, context_values, context_mask = self._context(context, context_mask, batch_size, cache)

        offsets = torch.arange(self.config.n_codebooks, device=tokens.device) * (self.config.vocab_size + 1)
        hidden = self.token_embedding(tokens + offsets[None, :, None]).sum(dim=1)  # [B, T, D]
        if conditions is not None:
            hidden = hidden + self.condition_embedding(conditions + self._condition_offsets(tokens.device)[None, :, None]).sum(1)

        queries = torch.arange(start, start + length, device=tokens.device)
        keys = torch.arange(0, start + length, device=tokens.device) if cache is not None else queries
        bias = self.position_bias(queries, keys)  # [1, H, T, T_k], shared by every layer

        for layer, block in enumerate(self.blocks):
            key = None if context_keys is None else context_keys[layer]
            value = None if context_values is None else context_values[layer]
            if torch.is_grad_enabled() and self.gradient_checkpointing and cache is None:
                hidden = self._gradient_checkpointing_func(block, hidden, bias, key, value, context_mask)
            else:
                hidden = block(hidden, bias, key, value, context_mask, cache, layer, start)
        if cache is not None:
            cache.length = start + length

        logits = torch.einsum("btd,kvd->bktv", self.norm_out(hidden), self.heads)
        return ARTransformerOutput(logits=logits) if return_dict else (logits,)

    def _check_tokens(self, tokens: torch.Tensor) -> tuple[int, int]:
        """Raise :class:`GenerationError` naming a malformed ``tokens``; return ``(batch_size, T)``."""
        config = self.config
        integer = isinstance(tokens, torch.Tensor) and not (tokens.dtype.is_floating_point or tokens.dtype.is_complex)
        if not integer or tokens.ndim != 3:
            shape = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise GenerationError(f"tokens must be an integer tensor [B, K={config.n_codebooks}, T], got {shape}")
        batch_size, codebooks, length = tokens.shape
        if codebooks != config.n_codebooks:
            raise GenerationError(
                f"tokens have {codebooks} codebooks (shape {tuple(tokens.shape)}), but the model was built with "
                f"n_codebooks={config.n_codebooks}"
            )
        if batch_size == 0 or length == 0:
            raise GenerationError(f"tokens must have at least one sequence and one position, got {tuple(tokens.shape)}")
        low, high = tokens.min().item(), tokens.max().item()
        if low < 0 or high > config.vocab_size:
            raise GenerationError(
                f"token ids must be in 0 … {config.vocab_size} (vocab_size={config.vocab_size}; {config.vocab_size} = the "
                f"empty token), got ids from {low} to {high}"
            )
        return batch_size, length

    def _condition_offsets(self, device) -> torch.Tensor:
        sizes = torch.tensor([0] + [v + 1 for v in self.config.condition_vocab_sizes[:-1]], device=device)
        return sizes.cumsum(0)

    def _check_conditions(self, conditions: torch.Tensor | None, batch_size: int, length: int) -> torch.Tensor | None:
        sizes = list(self.config.condition_vocab_sizes)
        if conditions is None:
            if sizes:
                raise GenerationError(f"conditions [B, {len(sizes)}, T] are required: the model has {len(sizes)} "
                                      "time-aligned condition streams (pass each stream's null id to drop one)")
            return None
        if not sizes:
            raise GenerationError("conditions were given, but the model has no condition streams "
                                  "(condition_vocab_sizes is empty)")
        integer = isinstance(conditions, torch.Tensor) and not (conditions.dtype.is_floating_point or conditions.dtype.is_complex)
        if not integer or tuple(conditions.shape) != (batch_size, len(sizes), length):
            shape = tuple(conditions.shape) if isinstance(conditions, torch.Tensor) else type(conditions).__name__
            raise GenerationError(f"conditions must be an integer tensor [{batch_size}, {len(sizes)}, {length}] (B, streams, "
                                  f"T like tokens), got {shape}")
        low = conditions.amin(dim=(0, 2))
        high = conditions.amax(dim=(0, 2))
        for stream, size in enumerate(sizes):
            if low[stream] < 0 or high[stream] > size:
                raise GenerationError(f"condition stream {stream} ids must be in 0 … {size} ({size} = its null), got "
                                      f"{int(low[stream])} … {int(high[stream])}")
        return conditions.long()

    def _context(
        self, context: torch.Tensor | None, mask: torch.Tensor | None, batch_size: int, cache: KVCache | None
    ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None, torch.Tensor | None]:
        """Per layer the context's cross-attention keys and values, and its bool mask ``[B, S]`` (Nones = no text);
        computed once per cache and then read back from it."""
        context_dim = self.config.context_dim
        if not context_dim:
            if context is not None:
                raise GenerationError(
                    "context was given, but the model has no cross-attention (context_dim=0); build it with context_dim"
                )
            return None, None, None
        if cache is not None and cache.context_keys is not None:
            if context is not None and context is not cache.context_source:
                raise GenerationError(
                    "this KV cache already holds the cross-attention keys of another context; pass context=None (or the "
                    "same tensor) to reuse them, or start a new cache (cache.reset()) for a new context"
                )
            return cache.context_keys, cache.context_values, cache.context_mask
        if context is None:
            return None, None, None
        if cache is not None and cache.length > 0:
            raise GenerationError(
                "pass the context on the KV cache's first forward: earlier positions were computed without it"
            )
        if context.ndim != 3 or context.shape[0] != batch_size or context.shape[2] != context_dim:
            raise GenerationError(
                f"context must be [{batch_size}, S, {context_dim}] (context_dim), got {tuple(context.shape)}"
            )
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        elif mask.shape != context.shape[:2]:
            raise GenerationError(
                f"context_mask must be [B, S] = {tuple(context.shape[:2])} like the context, got {tuple(mask.shape)}"
            )
        mask = mask.to(torch.bool)
        context_in = context.to(self.token_embedding.weight.dtype)
        projected = [block.cross_attention.project_context(context_in, mask) for block in self.blocks]
        keys, values = [key for key, _ in projected], [value for _, value in projected]
        if cache is not None:
            cache.context_keys, cache.context_values, cache.context_mask, cache.context_source = keys, values, mask, context
        return keys, values, mask
