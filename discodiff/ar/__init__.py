"""The autoregressive (AR) family: a vocal-semantic, hierarchical codec-token language model on the DAC codes.

- :mod:`.config` — :class:`ARConfig` (``family: ar``; ``configs/ar_*.yaml``).
- :mod:`.position` — causal T5 relative position bucketing and the shared bias table.
- :mod:`.layers` — QK-normed self-/cross-attention (SDPA), GEGLU feed-forward, the pre-norm decoder block.
- :mod:`.cache` — :class:`KVCache`, the preallocated key/value buffers of incremental decoding.
- :mod:`.transformer` — :class:`ARTransformer` (diffusers ``ModelMixin`` + ``ConfigMixin``).
- :mod:`.patterns` — the codebook patterns (:class:`DelayPattern`, :class:`FlattenPattern`, :func:`make_pattern`)
  and :func:`align_by_time` (frames of one rate → frames of another, by time).
- :mod:`.stages` — the semantic → coarse → fine stages (:class:`StageSpec`: sequences, teacher forcing, loss).
- :mod:`.sampling` — one stage sampled with batched guidance and the KV cache (:func:`sample_stage`).
- :mod:`.pipeline` — :class:`ARPipeline` (the shared call; save / load).
- :mod:`.build` — :func:`build_pipeline` and :data:`FAMILY`.

The semantic tokenizer and its feature extractors live in :mod:`discodiff.conditioning.semantic` and
:mod:`discodiff.conditioning.ssl` (data preparation uses them too).
"""

from .cache import KVCache
from .config import ARConfig
from .patterns import PATTERN_NAMES, DelayPattern, FlattenPattern, align_by_time, make_pattern
from .pipeline import ARPipeline, ARPipelineOutput
from .position import RelativePositionBias, relative_position_bucket
from .sampling import SamplingSettings, sample_stage
from .stages import StageSpec, StageTokens, stage_specs
from .transformer import ARTransformer, ARTransformerOutput

__all__ = [
    "PATTERN_NAMES",
    "ARConfig",
    "ARPipeline",
    "ARPipelineOutput",
    "ARTransformer",
    "ARTransformerOutput",
    "DelayPattern",
    "FlattenPattern",
    "KVCache",
    "RelativePositionBias",
    "SamplingSettings",
    "StageSpec",
    "StageTokens",
    "align_by_time",
    "make_pattern",
    "relative_position_bucket",
    "sample_stage",
    "stage_specs",
]
