"""Conditioners: frozen text encoders (Flan-T5, CLAP) and the trainable vocal encoder."""

from .text import (
    DEFAULT_CLAP,
    DEFAULT_T5,
    TEXT_CONDITIONERS,
    ClapTextConditioner,
    ConditionerNotFoundError,
    FlanT5Conditioner,
    FrozenTextConditioner,
    PromptTruncatedWarning,
    TextCondition,
    build_text_conditioner,
)
from .resolve import TINY_TEXT_ENCODER, load_text_encoder
from .tiny import (
    build_tiny_clap_conditioner,
    build_tiny_clap_model,
    build_tiny_clap_tokenizer,
    build_tiny_t5_conditioner,
    tiny_clap_config,
)
from .vocal import DacLatentFeatures, VocalConditioner, VocalConditionerOutput, VocalFeatureExtractor

__all__ = [
    "DEFAULT_CLAP",
    "DEFAULT_T5",
    "TEXT_CONDITIONERS",
    "TINY_TEXT_ENCODER",
    "ClapTextConditioner",
    "ConditionerNotFoundError",
    "DacLatentFeatures",
    "FlanT5Conditioner",
    "FrozenTextConditioner",
    "PromptTruncatedWarning",
    "TextCondition",
    "VocalConditioner",
    "VocalConditionerOutput",
    "VocalFeatureExtractor",
    "build_text_conditioner",
    "build_tiny_clap_conditioner",
    "build_tiny_clap_model",
    "build_tiny_clap_tokenizer",
    "build_tiny_t5_conditioner",
    "load_text_encoder",
    "tiny_clap_config",
]
