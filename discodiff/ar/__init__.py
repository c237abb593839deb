"""The autoregressive (AR) family: a decoder-only transformer over codec tokens (more of the family to come).

- :mod:`.position` — causal T5 relative position bucketing and the shared bias table.
- :mod:`.layers` — QK-normed self-/cross-attention (SDPA), GEGLU feed-forward, the pre-norm decoder block.
- :mod:`.cache` — :class:`KVCache`, the preallocated key/value buffers of incremental decoding.
- :mod:`.transformer` — :class:`ARTransformer` (diffusers ``ModelMixin`` + ``ConfigMixin``).
"""

from .cache import KVCache
from .position import RelativePositionBias, relative_position_bucket
from .transformer import ARTransformer, ARTransformerOutput

__all__ = ["ARTransformer", "ARTransformerOutput", "KVCache", "RelativePositionBias", "relative_position_bucket"]
