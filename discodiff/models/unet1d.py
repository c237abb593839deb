"""The 1D U-Net with cross-attention that denoises DAC latents ``[B, C, L]``.

Layout (diffusers ``UNet2DConditionModel`` in 1D): ``conv_in`` → down levels (``layers_per_block`` ×
[ResNet → optional transformer block], strided-conv downsample) → mid block (ResNet, self- and
cross-attention, ResNet) → up levels (``layers_per_block + 1`` × [concat skip → ResNet → optional
transformer block], nearest-neighbour ×2 + conv upsample) → GroupNorm → SiLU → ``conv_out``.
The time embedding (plus the projected pooled condition) modulates every ResNet by FiLM.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import TransformerBlock1D
from .embeddings import NullConditions, TimestepEmbedding


@dataclass
class UNet1DOutput(BaseOutput):
    """``sample [B, out_channels, L]``: the model prediction (v in the v-objective)."""

    sample: torch.Tensor


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``min(groups, channels)`` groups; ``channels`` must be a multiple of that."""
    if channels % min(groups, channels):
        raise ValueError(
            f"norm_groups={groups} does not divide {channels} channels; "
            "use block_channels that are multiples of norm_groups"
        )
    return nn.GroupNorm(min(groups, channels), channels)


class ResnetBlock1D(nn.Module):
    """``[B, C_in, L]``, embedding ``[B, E]`` → ``[B, C_out, L]``.

    GroupNorm → SiLU → Conv → GroupNorm → FiLM ``(1 + scale)·h + shift`` → SiLU → dropout → Conv (zero-init),
    plus the (1×1-conv projected when the width changes) input.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, norm_groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm_1 = group_norm(in_channels, norm_groups)
        self.conv_1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.embed_projection = nn.Linear(embed_dim, 2 * out_channels)
        self.norm_2 = group_norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_2.weight)
        nn.init.zeros_(self.conv_2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, hidden_states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.silu(self.norm_1(hidden_states)))
        scale, shift = self.embed_projection(F.silu(embedding))[:, :, None].chunk(2, dim=1)
        h = self.norm_2(h) * (1 + scale) + shift
        h = self.conv_2(self.dropout(F.silu(h)))
        return h + self.skip(hidden_states)


class Upsample1D(nn.Module):
    """``[B, C, L]`` → ``[B, C, 2L]``: nearest-neighbour ×2, then a 3-tap conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class CheckpointedBlock(nn.Module):
    """Base of the U-Net blocks: calls sub-modules through diffusers' gradient checkpointing when it is enabled.

    ``ModelMixin.enable_gradient_checkpointing`` sets ``gradient_checkpointing`` and ``_gradient_checkpointing_func``
    on every module that has the attribute.
    """

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def run(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)


class DownBlock1D(CheckpointedBlock):
    """One encoder level: ``num_layers`` × (ResNet → transformer block), then an optional ×½ strided conv.

    ``transformer_kwargs`` are the :class:`TransformerBlock1D` arguments; None builds the level without attention.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        embed_dim: int,
        norm_groups: int,
        dropout: float,
        transformer_kwargs: dict | None,
        add_downsample: bool,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock1D(in_channels if i == 0 else out_channels, out_channels, embed_dim, norm_groups, dropout)
            for i in range(num_layers)
        )
        self.attentions = (
            nn.ModuleList(TransformerBlock1D(out_channels, **transformer_kwargs) for _ in range(num_layers))
            if transformer_kwargs
            else None
        )
        self.downsample = nn.Conv1d(out_channels, out_channels, 3, stride=2, padding=1) if add_downsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        embedding: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        context_masks: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[B, C_in, L]`` → (``[B, C_out, L or L/2]``, skip tensors for the decoder)."""
        skips = []
        for index, resnet in enumerate(self.resnets):
            hidden_states = self.run(resnet, hidden_states, embedding)
            if self.attentions is not None:
                hidden_states = self.run(self.attentions[index], hidden_states, contexts, context_masks)
            skips.append(hidden_states)
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
            skips.append(hidden_states)
        return hidden_states, skips


class MidBlock1D(CheckpointedBlock):
    """Bottleneck: ResNet → transformer block (self-attention + cross-attention to each context) → ResNet."""

    def __init__(self, channels: int, embed_dim: int, norm_groups: int, dropout: float, transformer_kwargs: dict):
        super().__init__()
        self.resnet_1 = ResnetBlock1D(channels, channels, embed_dim, norm_groups, dropout)
        self.attention = TransformerBlock1D(channels, **transformer_kwargs)
        self.resnet_2 = ResnetBlock1D(channels, channels, embed_dim, norm_groups, dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        embedding: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        context_masks: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``[B, C, L]`` → ``[B, C, L]``."""
        hidden_states = self.run(self.resnet_1, hidden_states, embedding)
        hidden_states = self.run(self.attention, hidden_states, contexts, context_masks)
        return self.run(self.resnet_2, hidden_states, embedding)


class UpBlock1D(CheckpointedBlock):
    """One decoder level: per skip (concat → ResNet → transformer block), then an optional ×2 upsample.

    ``transformer_kwargs`` are the :class:`TransformerBlock1D` arguments; None builds the level without attention.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: Sequence[int],
        embed_dim: int,
        norm_groups: int,
        dropout: float,
        transformer_kwargs: dict | None,
        add_upsample: bool,
    ):
        super().__init__()
        resnet_in_channels = [in_channels] + [out_channels] * (len(skip_channels) - 1)
        self.resnets = nn.ModuleList(
            ResnetBlock1D(width + skip, out_channels, embed_dim, norm_groups, dropout)
            for width, skip in zip(resnet_in_channels, skip_channels, strict=True)
        )
        self.attentions = (
            nn.ModuleList(TransformerBlock1D(out_channels, **transformer_kwargs) for _ in skip_channels)
            if transformer_kwargs
            else None
        )
        self.upsample = Upsample1D(out_channels) if add_upsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: Sequence[torch.Tensor],
        embedding: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        context_masks: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``[B, C_in, L]`` and ``len(self.resnets)`` skips (consumed last-first) → ``[B, C_out, L or 2L]``."""
        for index, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skips[-1 - index]], dim=1)
            hidden_states = self.run(resnet, hidden_states, embedding)
            if self.attentions is not None:
                hidden_states = self.run(self.attentions[index], hidden_states, contexts, context_masks)
        if self.upsample is not None:
            hidden_states = self.upsample(hidden_states)
        return hidden_states


class UNet1DConditionModel(ModelMixin, ConfigMixin):
    """1D U-Net ``[B, in_channels, L]`` → ``[B, out_channels, L]`` conditioned on a continuous timestep, context
    sequences (cross-attention) and a pooled vector (added to the time embedding).

    It owns the learned null conditions for classifier-free guidance: ``condition_dropped`` replaces a
    sample's context ``i`` by a learned ``[null_context_lengths[i], context_dims[i]]`` sequence, and, for
    context ``pooled_context_index``, its pooled vector by a learned null vector.

    Args:
        in_channels: input channels (primary: 8; secondary: 72 = primary ‖ noisy secondary).
        out_channels: predicted channels (primary: 8; secondary: 64).
        block_channels: width per level; the sequence is halved between levels.
        layers_per_block: ResNets per encoder level (the decoder has one more).
        self_attention_levels: per level, whether its layers self-attend.
        cross_attention_levels: per level, whether its layers cross-attend to the contexts.
        attention_head_dim: channels per head (heads = width // attention_head_dim).
        context_dims: width of each context sequence, in the order they are passed to ``forward``.
        pooled_dim: width of the pooled condition vector; None for none.
        pooled_context_index: the context with which the pooled vector is dropped.
        null_context_lengths: length of each learned null sequence; None → 1 each.
        time_embed_dim: width of the time embedding; None → ``4 * block_channels[0]``.
        norm_groups: GroupNorm groups (``min(norm_groups, width)`` per layer).
        dropout: dropout in ResNets and feed-forwards.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 8,
        block_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 2,
        self_attention_levels: Sequence[bool] = (False, True, True),
        cross_attention_levels: Sequence[bool] = (False, True, True),
        attention_head_dim: int = 64,
        context_dims: Sequence[int] = (),
        pooled_dim: int | None = None,
        pooled_context_index: int = 0,
        null_context_lengths: Sequence[int] | None = None,
        time_embed_dim: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        block_channels, context_dims = tuple(block_channels), tuple(context_dims)
        if null_context_lengths is None:
            null_context_lengths = (1,) * len(context_dims)
        levels = len(block_channels)
        if levels == 0 or layers_per_block < 1:
            raise ValueError(
                f"block_channels needs at least one level and layers_per_block at least 1, "
                f"got {block_channels} and {layers_per_block}"
            )
        level_flags = {"self_attention_levels": self_attention_levels, "cross_attention_levels": cross_attention_levels}
        for name, flags in level_flags.items():
            if len(flags) != levels:
                raise ValueError(f"{name} needs one bool per level of block_channels ({levels}), got {tuple(flags)}")
        if len(null_context_lengths) != len(context_dims) or min(null_context_lengths, default=1) < 1:
            raise ValueError(
                f"null_context_lengths needs one positive length per context_dims entry ({len(context_dims)}), "
                f"got {tuple(null_context_lengths)}"
            )
        if pooled_dim is not None and not 0 <= pooled_context_index < len(context_dims):
            raise ValueError(
                f"pooled_context_index={pooled_context_index} must index context_dims {context_dims}: "
                "the pooled vector is dropped together with that context"
            )
        if block_channels[0] < out_channels:
            warnings.warn(
                f"block_channels[0]={block_channels[0]} is narrower than out_channels={out_channels}: the full-resolution "
                "level cannot carry every predicted channel; use a first width of at least out_channels",
                stacklevel=2,
            )
        time_embed_dim = time_embed_dim or 4 * block_channels[0]

        self.time_embedding = TimestepEmbedding(block_channels[0], time_embed_dim)
        self.pooled_projection = nn.Linear(pooled_dim, time_embed_dim) if pooled_dim is not None else None
        self.null_conditions = NullConditions(context_dims, null_context_lengths, pooled_dim)
        self.conv_in = nn.Conv1d(in_channels, block_channels[0], kernel_size=3, padding=1)

        def transformer_kwargs(level: int, self_attention: bool, cross_attention: bool) -> dict | None:
            """Arguments of level ``level``'s transformer blocks; None where it has no attention."""
            if not (self_attention or cross_attention):
                return None
            return dict(
                head_dim=attention_head_dim,
                self_attention=self_attention,
                context_dims=context_dims if cross_attention else (),
                frame_stride=2**level,
                dropout=dropout,
            )

        level_transformers = [
            transformer_kwargs(level, self_attention_levels[level], cross_attention_levels[level])
            for level in range(levels)
        ]

        resnet_kwargs = dict(embed_dim=time_embed_dim, norm_groups=norm_groups, dropout=dropout)
        self.down_blocks = nn.ModuleList()
        skip_channels = [block_channels[0]]
        for level, width in enumerate(block_channels):
            is_last = level == levels - 1
            block = DownBlock1D(
                in_channels=skip_channels[-1],
                out_channels=width,
                num_layers=layers_per_block,
                transformer_kwargs=level_transformers[level],
                add_downsample=not is_last,
                **resnet_kwargs,
            )
            self.down_blocks.append(block)
            skip_channels += [width] * (layers_per_block if is_last else layers_per_block + 1)

        mid_transformer = transformer_kwargs(levels - 1, self_attention=True, cross_attention=bool(context_dims))
        self.mid_block = MidBlock1D(block_channels[-1], transformer_kwargs=mid_transformer, **resnet_kwargs)

        self.up_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            block = UpBlock1D(
                in_channels=block_channels[min(level + 1, levels - 1)],
                out_channels=block_channels[level],
                skip_channels=[skip_channels.pop() for _ in range(layers_per_block + 1)],
                transformer_kwargs=level_transformers[level],
                add_upsample=level > 0,
                **resnet_kwargs,
            )
            self.up_blocks.append(block)

        self.norm_out = group_norm(block_channels[0], norm_groups)
        self.conv_out = nn.Conv1d(block_channels[0], out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def count_parameters(cls, **config) -> int:
        """Parameter count of a model with this config, built on the meta device (no memory is allocated)."""
        with torch.device("meta"):
            return cls(**config).num_parameters()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        contexts: Sequence[torch.Tensor | None] = (),
        context_masks: Sequence[torch.Tensor | None] | None = None,
        pooled: torch.Tensor | None = None,
        condition_dropped: Sequence[torch.Tensor | None] | None = None,
        return_dict: bool = True,
    ) -> UNet1DOutput | tuple[torch.Tensor]:
        """Predict ``[B, out_channels, L]`` from a noisy ``sample [B, in_channels, L]`` (any ``L``).

        Args:
            sample: ``[B, in_channels, L]`` noisy latents.
            timestep: ``[B]`` (or scalar) float diffusion time in ``[0, 1]``.
            contexts: one ``[B, S_i, context_dims[i]]`` sequence per context (positions already added), or
                None where that context is dropped for every sample.
            context_masks: per context a bool ``[B, S_i]`` (True = valid token) or None (all valid).
            pooled: ``[B, pooled_dim]``; None = the learned null for every sample.
            condition_dropped: per context a bool ``[B]`` (True = use the learned null) or None (none dropped).
            return_dict: return ``UNet1DOutput`` (else a 1-tuple).
        """
        batch_size, length = self._check_inputs(sample, contexts, context_masks, pooled, condition_dropped)
        timestep = self._broadcast_timestep(timestep, batch_size, sample.device)
        contexts, context_masks, pooled = self._apply_null_conditions(
            contexts, context_masks, pooled, condition_dropped, batch_size
        )
        embedding = self.time_embedding(timestep)
        if self.pooled_projection is not None:
            embedding = embedding + self.pooled_projection(pooled)

        multiple = 2 ** (len(self.config.block_channels) - 1)
        hidden_states = F.pad(sample, (0, -length % multiple))
        hidden_states = self.conv_in(hidden_states)
        skips = [hidden_states]
        for block in self.down_blocks:
            hidden_states, block_skips = block(hidden_states, embedding, contexts, context_masks)
            skips += block_skips
        hidden_states = self.mid_block(hidden_states, embedding, contexts, context_masks)
        for block in self.up_blocks:
            level_skips, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            hidden_states = block(hidden_states, level_skips, embedding, contexts, context_masks)
        output = self.conv_out(F.silu(self.norm_out(hidden_states)))[..., :length]
        return UNet1DOutput(sample=output) if return_dict else (output,)

    def _apply_null_conditions(
        self,
        contexts: Sequence[torch.Tensor | None],
        context_masks: Sequence[torch.Tensor | None] | None,
        pooled: torch.Tensor | None,
        condition_dropped: Sequence[torch.Tensor | None] | None,
        batch_size: int,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Substitute the learned nulls for dropped conditions; every returned context has a bool mask."""
        num_contexts = len(self.config.context_dims)
        context_masks = context_masks if context_masks is not None else (None,) * num_contexts
        condition_dropped = condition_dropped if condition_dropped is not None else (None,) * num_contexts
        conditioned = [
            self.null_conditions.context(i, contexts[i], context_masks[i], condition_dropped[i], batch_size)
            for i in range(num_contexts)
        ]
        for i, (_, mask) in enumerate(conditioned):
            if not mask.any(dim=1).all():
                raise ValueError(
                    f"context_masks[{i}] has a row without valid tokens; mark at least one token valid or drop "
                    f"that row with condition_dropped[{i}]"
                )
        if self.config.pooled_dim is not None:
            index = self.config.pooled_context_index
            pooled = None if contexts[index] is None else pooled
            pooled = self.null_conditions.pooled_vector(pooled, condition_dropped[index], batch_size)
        return [context for context, _ in conditioned], [mask for _, mask in conditioned], pooled

    def _check_inputs(
        self,
        sample: torch.Tensor,
        contexts: Sequence[torch.Tensor | None],
        context_masks: Sequence[torch.Tensor | None] | None,
        pooled: torch.Tensor | None,
        condition_dropped: Sequence[torch.Tensor | None] | None,
    ) -> tuple[int, int]:
        """Raise a ValueError naming the first malformed input; return ``(batch_size, length)``."""
        config = self.config
        if sample.ndim != 3 or sample.shape[1] != config.in_channels:
            raise ValueError(f"sample must be [B, {config.in_channels}, L], got {tuple(sample.shape)}")
        batch_size, _, length = sample.shape
        context_dims = tuple(config.context_dims)
        if len(contexts) != len(context_dims):
            raise ValueError(
                f"contexts needs one entry per context_dims {context_dims} (None = dropped for every sample), "
                f"got {len(contexts)}"
            )
        for name, entries in (("context_masks", context_masks), ("condition_dropped", condition_dropped)):
            if entries is not None and len(entries) != len(context_dims):
                raise ValueError(
                    f"{name} needs one entry (or None) per context ({len(context_dims)}), got {len(entries)}"
                )
        for i, (context, dim) in enumerate(zip(contexts, context_dims)):
            if context is not None and (context.ndim != 3 or context.shape[0] != batch_size or context.shape[2] != dim):
                raise ValueError(f"contexts[{i}] must be [{batch_size}, S, {dim}], got {tuple(context.shape)}")
            mask = None if context_masks is None else context_masks[i]
            if mask is not None and context is None:
                raise ValueError(f"context_masks[{i}] is given but contexts[{i}] is None; pass None for both")
            if mask is not None and (mask.dtype != torch.bool or mask.shape != context.shape[:2]):
                raise ValueError(
                    f"context_masks[{i}] must be a bool [{batch_size}, {context.shape[1]}] tensor "
                    f"(True = valid token), got {mask.dtype} {tuple(mask.shape)}"
                )
            dropped = None if condition_dropped is None else condition_dropped[i]
            if dropped is not None and (dropped.dtype != torch.bool or dropped.shape != (batch_size,)):
                raise ValueError(
                    f"condition_dropped[{i}] must be a bool [{batch_size}] tensor, "
                    f"got {dropped.dtype} {tuple(dropped.shape)}"
                )
        if pooled is not None and config.pooled_dim is None:
            raise ValueError("pooled is given but the model was built with pooled_dim=None; pass pooled=None")
        if pooled is not None and pooled.shape != (batch_size, config.pooled_dim):
            raise ValueError(f"pooled must be [{batch_size}, {config.pooled_dim}], got {tuple(pooled.shape)}")
        return batch_size, length

    @staticmethod
    def _broadcast_timestep(timestep: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
        """Scalar, ``[1]`` or ``[B]`` float time → ``[B]``."""
        timestep = torch.as_tensor(timestep, device=device)
        if not timestep.is_floating_point():
            raise ValueError(
                f"timestep must be float diffusion time in [0, 1], got dtype {timestep.dtype}; "
                "divide integer scheduler steps by the number of training steps"
            )
        if timestep.numel() == 1:
            timestep = timestep.reshape(1).expand(batch_size)
        if timestep.shape != (batch_size,):
            raise ValueError(f"timestep must be a scalar or [{batch_size}], got {tuple(timestep.shape)}")
        return timestep
