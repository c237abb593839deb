"""Typed model configs read from YAML (``configs/*.yaml``) with ``key=value`` overrides.

A :class:`DiscoDiffConfig` describes a whole pipeline: which codec and text encoder it references
(hub id or local path, or ``tiny`` for ones built locally), the vocal encoder, both U-Nets and the
sampling defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .call_inputs import MAX_DURATION_SECONDS, MAX_GUIDANCE
from .codec.resolve import TINY_CODEC, CodecConfig
from .conditioning.resolve import TextEncoderConfig
from .configuration import bounded, load_config
from .diffusion.sampling import SCHEDULERS
from .latents import NORMALIZE_PER

TINY = TINY_CODEC  # the id of the locally built tiny codec and text encoder (codec.resolve, conditioning.resolve)
MAX_INFERENCE_STEPS = 1000


@dataclass
class VocalEncoderConfig:
    """The trainable vocal encoder (DAC latents of the vocal → cross-attention tokens)."""

    enabled: bool = True
    hidden_channels: int = bounded(256, low=1)
    out_dim: int = bounded(512, low=1)
    num_blocks: int = bounded(2, low=0)
    downsample: int = bounded(1, low=1)
    norm_groups: int = bounded(32, low=1)


@dataclass
class UNetConfig:
    """Keyword arguments of :class:`~discodiff.models.UNet1DConditionModel` that are not derived
    from the codec (channels) or the conditioners (context and pooled widths)."""

    block_channels: list[int] = bounded(default_factory=lambda: [128, 256, 384, 512], low=1)
    layers_per_block: int = bounded(2, low=1)
    self_attention_levels: list[bool] = field(default_factory=lambda: [False, False, True, True])
    cross_attention_levels: list[bool] = field(default_factory=lambda: [False, True, True, True])
    attention_head_dim: int = bounded(64, low=1)
    time_embed_dim: int | None = bounded(None, low=1)
    norm_groups: int = bounded(32, low=1)
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)


@dataclass
class SamplingConfig:
    """Defaults of a sampling call; guidance 1 means unguided (one conditional pass), 0 ignores the condition."""

    scheduler: str = bounded("cosine-dpm", choices=SCHEDULERS)
    num_inference_steps: int = bounded(50, low=1, high=MAX_INFERENCE_STEPS)
    text_guidance: float = bounded(3.0, low=0.0, high=MAX_GUIDANCE)
    vocal_guidance: float = bounded(1.5, low=0.0, high=MAX_GUIDANCE)
    duration: float = bounded(29.0, low=0.0, high=MAX_DURATION_SECONDS, low_open=True)


@dataclass
class DiscoDiffConfig:
    """A whole coarse-to-fine diffusion pipeline (``family: discodiff``).

    ``primary_codebooks`` (P) is where the coarse-to-fine split falls: the primary U-Net generates codebooks
    0 … P−1, the secondary the rest given them. P = 1 is the paper's split; P = K (the codec's codebook count) is
    the flat ablation: one U-Net on all codebooks, no secondary (its ``secondary`` section is then unused).
    """

    family: str = bounded("discodiff", choices=("discodiff",))
    codec: CodecConfig = field(default_factory=CodecConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vocal_encoder: VocalEncoderConfig = field(default_factory=VocalEncoderConfig)
    primary: UNetConfig = field(default_factory=UNetConfig)
    secondary: UNetConfig = field(default_factory=UNetConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    normalize_per: str = bounded("codebook", choices=NORMALIZE_PER)
    primary_codebooks: int = bounded(1, low=1)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "DiscoDiffConfig":
        """Read ``path``, apply ``key.sub=value`` overrides and check every value against its field type."""
        return load_config(cls, path, overrides, hint="see configs/ for tiny.yaml, base.yaml, paper.yaml")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


