"""The autoregressive (AR) family: a vocal-semantic, hierarchical codec-token language model on the DAC codes.

- :mod:`.config` — :class:`ARConfig` (``family: ar``; ``configs/ar_*.yaml``).
- :mod:`.position` — causal T5 relative position bucketing and the shared bias table.
- :mod:`.layers` — QK-normed self-/cross-attention (SDPA), GEGLU feed-forward, the pre-norm decoder block.
- :mod:`.cache` — :class:`KVCache`, the preallocated key/value buffers of incremental decoding.
- :mod:`.transformer` — :class:`ARTransformer` (diffusers ``ModelMixin`` + ``ConfigMixin``).
- :mod:`.patterns` — the codebook patterns (:class:`DelayPattern`, :class:`FlattenPattern`, :func:`make_pattern`)
  and :func:`align_by_time` (frames of one rate → frames of another, by time).
- :mod:`.semantic` — the semantic tokenizer: :class:`FeatureExtractor` (protocol), :class:`CodecFeatures`,
  :func:`noisy` (SingSong's noisy-vocal featurisation) and :class:`SemanticTokenizer` (k-means tokens).
- :mod:`.ssl_features` — :class:`SSLFeatures` (HuBERT / MERT hidden layers), :func:`load_ssl_features`,
  :func:`build_tiny_hubert`.
- :mod:`.stages` — the semantic → coarse → fine stages (:class:`StageSpec`: sequences, teacher forcing, loss).
- :mod:`.sampling` — one stage sampled with batched guidance and the KV cache (:func:`sample_stage`).
- :mod:`.pipeline` — :class:`ARPipeline` (the shared call; save / load).
- :mod:`.build` — :func:`build_pipeline` and :data:`FAMILY`.
"""

from .cache import KVCache
from .config import ARConfig
from .patterns import PATTERN_NAMES, DelayPattern, FlattenPattern, align_by_time, make_pattern
from .pipeline import ARPipeline, ARPipelineOutput
from .position import RelativePositionBias, relative_position_bucket
from .sampling import SamplingSettings, sample_stage
from .semantic import CodecFeatures, FeatureExtractor, SemanticTokenizer, noisy
from .ssl_features import SSLFeatures, build_tiny_hubert, load_ssl_features
from .stages import StageSpec, StageTokens, stage_specs
from .transformer import ARTransformer, ARTransformerOutput

__all__ = [
    "PATTERN_NAMES",
    "ARConfig",
    "ARPipeline",
    "ARPipelineOutput",
    "ARTransformer",
    "ARTransformerOutput",
    "CodecFeatures",
    "DelayPattern",
    "FeatureExtractor",
    "FlattenPattern",
    "KVCache",
    "RelativePositionBias",
    "SSLFeatures",
    "SamplingSettings",
    "SemanticTokenizer",
    "StageSpec",
    "StageTokens",
    "align_by_time",
    "build_tiny_hubert",
    "load_ssl_features",
    "make_pattern",
    "noisy",
    "relative_position_bucket",
    "sample_stage",
    "stage_specs",
]
