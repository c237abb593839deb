"""Conditioners: frozen text encoders (Flan-T5, CLAP), the trainable vocal encoder, and the semantic tokenizer of stems
(k-means over frame features: our codec's latents, or HuBERT / MERT layers) that the AR family and data preparation use."""

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
from .semantic import CodecFeatures, FeatureExtractor, SemanticTokenizer, noisy
from .ssl import SSLFeatures, build_tiny_hubert, load_ssl_features
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
    "CodecFeatures",
    "FeatureExtractor",
    "SSLFeatures",
    "SemanticTokenizer",
    "build_tiny_hubert",
    "load_ssl_features",
    "noisy",
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
