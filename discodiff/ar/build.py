"""Build a randomly initialised :class:`~discodiff.ar.pipeline.ARPipeline` from an :class:`~discodiff.ar.config.ARConfig`,
and :data:`FAMILY`, the AR family's descriptor for :mod:`discodiff.pipeline_utils`.

Codebook counts and sizes come from the codec, the semantic vocabulary from ``tokenizer.k``, the context width from
the text encoder. A new model's semantic tokenizer has seeded random centroids and is marked unfitted; the training
task fits it on the training data (k-means) before the stages learn its tokens.
"""

from __future__ import annotations

import torch

from ..codec.resolve import TINY_CODEC, load_codec
from ..conditioning.resolve import load_text_encoder
from ..pipeline_utils import Family
from .config import STAGES, ARConfig
from .pipeline import ARPipeline
from ..conditioning.semantic import CodecFeatures, SemanticTokenizer
from ..conditioning.ssl import TINY_SSL, SSLFeatures, resolve_ssl_features
from ..errors import ConfigError
from .stages import stage_specs
from .transformer import ARTransformer

FAMILY = Family(
    name="ar",
    config="discodiff.ar.config:ARConfig",
    build="discodiff.ar.build:build_pipeline",
    pipeline="discodiff.ar.pipeline:ARPipeline",
    task="discodiff.training.ar_task:ARStageTask",
    sample_options=("temperature", "top_k", "top_p", "text_guidance", "vocal_guidance", "semantic_tokens",
                    "coarse_codes", "overlap", "use_cache", "output_type"),
    load_options=("codec", "text_encoder"),
)


def stage_arguments(config: ARConfig, spec, context_dim: int, name: str) -> dict:
    """The :class:`ARTransformer` arguments of stage ``name``: its config plus what the codec, tokenizer and text
    encoder fix (``spec``: the stage's :class:`~discodiff.ar.stages.StageSpec`)."""
    return dict(n_codebooks=spec.model_codebooks, vocab_size=spec.model_vocab_size,
                condition_vocab_sizes=list(spec.condition_vocab_sizes), context_dim=context_dim,
                **vars(getattr(config.stages, name)))


def stage_parameter_counts(config: ARConfig, n_codebooks: int = 9, codebook_size: int = 1024,
                           context_dim: int = 1024) -> dict[str, int]:
    """Parameters per stage for ``config`` on a codec of ``n_codebooks × codebook_size`` (default: the 44.1 kHz DAC)
    with text of ``context_dim`` (default: Flan-T5-large), counted on the meta device (nothing is allocated)."""
    specs = stage_specs(n_codebooks, codebook_size, config.coarse_codebooks, config.tokenizer.k, config.pattern)
    return {name: ARTransformer.count_parameters(**stage_arguments(config, specs[name], context_dim, name))
            for name in STAGES}


def build_pipeline(config: ARConfig, seed: int = 0, tokenizer: SemanticTokenizer | None = None) -> ARPipeline:
    """A pipeline with seeded random stages; ``tokenizer`` (fitted) replaces the random, unfitted one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = load_codec(config.codec.id, config.codec.backend)
        text = config.text_encoder
        text_encoder = load_text_encoder(text.kind, text.id, max_length=text.max_length)
        features = semantic_features(config, codec)
        fitted = tokenizer is not None
        tokenizer = tokenizer or SemanticTokenizer(torch.randn(config.tokenizer.k, features.dim), "random (unfitted)",
                                                   features.frame_rate)
        specs = stage_specs(codec.n_codebooks, codec.spec.codebook_size, config.coarse_codebooks, tokenizer.k,
                            config.pattern)
        stages = {name: ARTransformer(**stage_arguments(config, specs[name], text_encoder.sequence_dim, name))
                  for name in STAGES}
    sources = {
        "codec": {"id": config.codec.id, "backend": config.codec.backend, "bundled": config.codec.id == TINY_CODEC},
        "text_encoder": {"kind": text.kind, "id": text.id, "max_length": text.max_length,
                         "bundled": text.id == TINY_CODEC},
    }
    if config.tokenizer.features != "codec":
        sources["semantic_features"] = {"id": config.tokenizer.id, "bundled": config.tokenizer.id == TINY_SSL}
    return ARPipeline(codec, text_encoder, tokenizer, features, stages, config.pattern, config.coarse_codebooks, fitted,
                      sources, vars(config.sampling))


def semantic_features(config: ARConfig, codec) -> CodecFeatures | SSLFeatures:
    """The feature extractor ``config.tokenizer`` names: the codec's first codebooks, or an SSL model."""
    settings = config.tokenizer
    if settings.features == "codec":
        if settings.codebooks > codec.n_codebooks:
            raise ConfigError(f"tokenizer.codebooks={settings.codebooks}: the codec has {codec.n_codebooks} codebooks")
        return CodecFeatures(codec, settings.codebooks)
    return resolve_ssl_features(settings.features, settings.id, settings.layer)
