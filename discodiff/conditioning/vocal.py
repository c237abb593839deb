"""Vocal conditioning: time-aligned vocal features → position-tagged tokens for the U-Net's cross-attention.

A :class:`VocalFeatureExtractor` turns the vocal waveform into features at the codec frame rate
(default :class:`DacLatentFeatures`: the vocal's own DAC latents). :class:`VocalConditioner` (trained
with the U-Net and saved with the pipeline) encodes them with a small conv net and adds the sinusoidal
embedding of each token's input frame, the same positions the U-Net gives its latent tokens, so that
cross-attention can learn the alignment. Vocal and latents must start at the same frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from ..models.embeddings import sinusoidal_embedding

if TYPE_CHECKING:
    from ..codec import DacCodec
    from ..latents import LatentStats


class VocalFeatureExtractor(Protocol):
    """Vocal audio ``[B, 1, T]`` at :attr:`sample_rate` → features ``[B, feature_dim, L]``, ``L`` codec frames.

    Features must be frame-aligned with the codec latents (frame ``i`` of both covers the same audio).
    Self-supervised features (MERT, HuBERT) can be added as extractors that resample their own frame
    rate to the codec's; only :class:`DacLatentFeatures` exists so far.
    """

    @property
    def feature_dim(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


class DacLatentFeatures:
    """The vocal's own DAC latents ``[B, K·d, L]`` from ``codec``, normalised with ``stats`` when given."""

    def __init__(self, codec: DacCodec, stats: LatentStats | None = None):
        self.codec = codec
        self.stats = stats

    @property
    def feature_dim(self) -> int:
        return self.codec.latent_channels

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def __call__(self, audio: torch.Tensor, **chunking) -> torch.Tensor:
        """``audio [B, 1, T]`` → ``[B, K·d, L]``; ``chunking`` goes to :meth:`DacCodec.encode`."""
        # clone: the codec encodes in inference mode, whose tensors cannot enter autograd graphs
        latents = self.codec.encode(audio, **chunking).clone()
        return latents if self.stats is None else self.stats.normalize(latents)


@dataclass
class VocalConditionerOutput(BaseOutput):
    """``sequence [B, L', out_dim]`` vocal tokens (zero where masked), ``mask [B, L']`` bool (True = valid)."""

    sequence: torch.Tensor
    mask: torch.Tensor


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over the channel groups of each frame on its own: ``[B, C, L]`` → ``[B, C, L]``.

    Unlike ``nn.GroupNorm`` on ``[B, C, L]`` it takes no statistics across time, so padded frames cannot
    change valid ones.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        frames = rearrange(hidden_states, "b c l -> (b l) c")
        return rearrange(super().forward(frames), "(b l) c -> b c l", b=hidden_states.shape[0])


class VocalResidualBlock(nn.Module):
    """``[B, C, L]`` → ``[B, C, L]``: 2 × (FrameGroupNorm → SiLU → 3-tap conv) plus the input.

    ``keep [B, 1, L]`` (1 = valid frame) zeroes the conv inputs and the output at padded frames, so a
    padded vocal gives the same valid tokens as the unpadded one.
    """

    def __init__(self, channels: int, norm_groups: int):
        super().__init__()
        self.norm_1 = FrameGroupNorm(norm_groups, channels)
        self.conv_1 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.norm_2 = FrameGroupNorm(norm_groups, channels)
        self.conv_2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.silu(self.norm_1(hidden_states)) * keep)
        h = self.conv_2(F.silu(self.norm_2(h)) * keep)
        return (hidden_states + h) * keep


class VocalConditioner(ModelMixin, ConfigMixin):
    """Vocal features ``[B, in_channels, L]`` (normalised) → tokens ``[B, ceil(L / downsample), out_dim]`` + mask.

    ``conv_in`` (kernel ``2·downsample + 1``, stride ``downsample``: token ``i`` is centred on input
    frame ``i·downsample``, as the U-Net's strided convs centre level-``ℓ`` token ``i`` on frame
    ``i·2^ℓ``) → ``num_blocks`` residual blocks → LayerNorm → Linear, plus
    ``sinusoidal_embedding(i·downsample, out_dim)``.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 72,
        hidden_channels: int = 256,
        out_dim: int = 512,
        num_blocks: int = 4,
        downsample: int = 1,
        norm_groups: int = 32,
    ):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1 (1 = one token per frame), got {downsample}")
        if out_dim % 2:
            raise ValueError(f"out_dim must be even for the sinusoidal positions, got {out_dim}")
        if hidden_channels % norm_groups:
            raise ValueError(f"norm_groups={norm_groups} must divide hidden_channels={hidden_channels}")
        self.conv_in = nn.Conv1d(
            in_channels, hidden_channels, kernel_size=2 * downsample + 1, stride=downsample, padding=downsample
        )
        self.blocks = nn.ModuleList(VocalResidualBlock(hidden_channels, norm_groups) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden_channels)
        self.proj_out = nn.Linear(hidden_channels, out_dim)

    def num_tokens(self, num_frames: int) -> int:
        """``L'`` tokens produced for ``num_frames`` input frames."""
        return math.ceil(num_frames / self.config.downsample)

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> VocalConditionerOutput:
        """``features [B, in_channels, L]``, ``frame_mask [B, L]`` bool (True = valid; None = all valid)."""
        if features.ndim != 3 or features.shape[1] != self.config.in_channels:
            raise ValueError(
                f"vocal features must be [B, {self.config.in_channels}, L] (in_channels of this VocalConditioner), "
                f"got {tuple(features.shape)}"
            )
        batch_size, _, num_frames = features.shape
        if frame_mask is None:
            frame_mask = torch.ones(batch_size, num_frames, dtype=torch.bool, device=features.device)
        elif frame_mask.shape != (batch_size, num_frames) or frame_mask.dtype != torch.bool:
            raise ValueError(
                f"frame_mask must be bool [B, L] = {(batch_size, num_frames)}, "
                f"got {frame_mask.dtype} {tuple(frame_mask.shape)}"
            )
        downsample = self.config.downsample
        mask = frame_mask[:, ::downsample]  # a token is valid when the frame it is centred on is
        keep = mask[:, None].to(features.dtype)
        hidden_states = self.conv_in(features * frame_mask[:, None].to(features.dtype)) * keep
        for block in self.blocks:
            hidden_states = block(hidden_states, keep)
        tokens = self.proj_out(self.norm_out(rearrange(hidden_states, "b c l -> b l c")))
        frames = torch.arange(tokens.shape[1], device=tokens.device) * downsample
        tokens = tokens + sinusoidal_embedding(frames, self.config.out_dim).to(tokens.dtype)
        return VocalConditionerOutput(sequence=tokens * mask[..., None].to(tokens.dtype), mask=mask)
