"""The DAC adapter: audio ⇄ latent query ``[B, K·d, L]`` ⇄ codes ``[B, K, L]``; two backends."""

from .backends import BACKENDS, DEFAULT_CODEC, CodecNotFoundError, CodecSpec
from .dac_codec import DacCodec
from .resolve import TINY_CODEC, load_codec
from .tiny import build_tiny_codec, tiny_dac_config

__all__ = ["BACKENDS", "DEFAULT_CODEC", "TINY_CODEC", "CodecNotFoundError", "CodecSpec", "DacCodec", "build_tiny_codec",
           "load_codec", "tiny_dac_config"]
