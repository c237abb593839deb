"""The autoregressive (AR) family: a decoder-only transformer over codec tokens (more of the family to come).

- :mod:`.position` — causal T5 relative position bucketing and the shared bias table.
- :mod:`.layers` — QK-normed self-/cross-attention (SDPA), GEGLU feed-forward, the pre-norm decoder block.
- :mod:`.cache` — :class:`KVCache`, the preallocated key/value buffers of incremental decoding.
- :mod:`.transformer` — :class:`ARTransformer` (diffusers ``ModelMixin`` + ``ConfigMixin``).
- :mod:`.patterns` — the codebook patterns (:class:`DelayPattern`, :class:`FlattenPattern`, :func:`make_pattern`)
  and :func:`align_by_time` (frames of one rate → frames of another, by time).
- :mod:`.semantic` — the semantic tokenizer: :class:`FeatureExtractor` (protocol), :class:`CodecFeatures`,
  :func:`noisy` (SingSong's noisy-vocal featurisation) and :class:`SemanticTokenizer` (k-means tokens).
"""

from .cache import KVCache
from .patterns import PATTERN_NAMES, DelayPattern, FlattenPattern, align_by_time, make_pattern
from .position import RelativePositionBias, relative_position_bucket
from .semantic import CodecFeatures, FeatureExtractor, SemanticTokenizer, noisy
from .transformer import ARTransformer, ARTransformerOutput

__all__ = [
    "PATTERN_NAMES",
    "ARTransformer",
    "ARTransformerOutput",
    "CodecFeatures",
    "DelayPattern",
    "FeatureExtractor",
    "FlattenPattern",
    "KVCache",
    "RelativePositionBias",
    "SemanticTokenizer",
    "align_by_time",
    "make_pattern",
    "noisy",
    "relative_position_bucket",
]
