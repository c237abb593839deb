"""The typed model config of the AR family (``family: ar``, ``configs/ar_*.yaml``).

An :class:`ARConfig` names the codec and text encoder (as the diffusion family does), the semantic tokenizer's
size and features, the codebook pattern, where the coarse codebooks end, one transformer per stage and the
sampling defaults. Codebook counts and sizes come from the codec, never from the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..call_inputs import MAX_DURATION_SECONDS, MAX_GUIDANCE
from ..codec.resolve import CodecConfig
from ..conditioning.resolve import TextEncoderConfig
from ..configuration import bounded, load_config
from .patterns import PATTERN_NAMES

FAMILY_NAME = "ar"
STAGES = ("semantic", "coarse", "fine")
FEATURE_KINDS = ("codec", "hubert", "mert")
CONFIG_HINT = "see configs/ for ar_tiny.yaml and ar_base.yaml"


@dataclass
class TokenizerConfig:
    """The semantic tokens: ``k`` k-means clusters of frame ``features``.

    - ``codec``: the pre-snap latents of the codec's first ``codebooks`` codebooks
      (:class:`~discodiff.conditioning.semantic.CodecFeatures`); the training task fits the centroids on the training
      data (as latent statistics are) and computes the tokens from the cached latents.
    - ``hubert`` / ``mert``: layer ``layer`` of an SSL model (``id``: hub id or local dir; None = the kind's default,
      ``tiny`` = a random tiny HuBERT built locally, for tests; :mod:`discodiff.conditioning.ssl`); the tokens and
      their tokenizer come from the latent cache (``discodiff tokenize``), and the pipeline runs the model on a vocal.
    """

    k: int = bounded(500, low=2, high=65536)
    features: str = bounded("codec", choices=FEATURE_KINDS)
    codebooks: int = bounded(1, low=1)
    id: str | None = None
    layer: int | None = bounded(None, low=0)


@dataclass
class StageConfig:
    """One stage's transformer (:class:`~discodiff.ar.transformer.ARTransformer` arguments not derived from the
    codec, the tokenizer or the text encoder). ``max_length`` bounds the sequence (and KV cache) of one call."""

    d_model: int = bounded(512, low=1)
    n_layers: int = bounded(8, low=1)
    n_heads: int = bounded(8, low=1)
    max_length: int = bounded(4096, low=2)
    rel_buckets: int = bounded(32, low=2)
    rel_max_distance: int = bounded(128, low=2)
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)


@dataclass
class StagesConfig:
    """The three stages' transformers."""

    semantic: StageConfig = field(default_factory=StageConfig)
    coarse: StageConfig = field(default_factory=StageConfig)
    fine: StageConfig = field(default_factory=StageConfig)


@dataclass
class ARSamplingConfig:
    """Defaults of a sampling call: temperature, top-k (0 = off), top-p (1 = off), guidance (1 = unguided)."""

    temperature: float = bounded(1.0, low=0.0, high=10.0, low_open=True)
    top_k: int = bounded(250, low=0)
    top_p: float = bounded(1.0, low=0.0, high=1.0, low_open=True)
    text_guidance: float = bounded(3.0, low=0.0, high=MAX_GUIDANCE)
    vocal_guidance: float = bounded(1.5, low=0.0, high=MAX_GUIDANCE)
    duration: float = bounded(10.0, low=0.0, high=MAX_DURATION_SECONDS, low_open=True)


@dataclass
class ARConfig:
    """A whole AR pipeline: semantic → coarse → fine on one codec (``family: ar``).

    ``pattern``: ``delay`` (MusicGen) or ``flatten`` (HAFM's interleaving), for the coarse and fine stages.
    ``coarse_codebooks``: codebooks ``0 … c−1`` are the coarse stage's, the rest the fine stage's (``c`` below the
    codec's codebook count).
    """

    family: str = bounded(FAMILY_NAME, choices=(FAMILY_NAME,))
    codec: CodecConfig = field(default_factory=CodecConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pattern: str = bounded("delay", choices=PATTERN_NAMES)
    coarse_codebooks: int = bounded(3, low=1)
    stages: StagesConfig = field(default_factory=StagesConfig)
    sampling: ARSamplingConfig = field(default_factory=ARSamplingConfig)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "ARConfig":
        """Read ``path``, apply ``key.sub=value`` overrides and check every value against its field type."""
        return load_config(cls, path, overrides, hint=CONFIG_HINT)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
