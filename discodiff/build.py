"""Build a randomly initialised :class:`DiscoDiffPipeline` from a :class:`DiscoDiffConfig`.

Channel counts come from the codec (``d`` and ``K·d``) and context widths from the conditioners, so a
config only states what is a real choice. ``tiny`` codec / text encoder ids build local random
models (no download) that are bundled into the saved model directory; they are fixed models, not
functions of the build seed (:mod:`discodiff.codec.resolve`, :mod:`discodiff.conditioning.resolve`).
:data:`FAMILY` describes the coarse-to-fine diffusion family for :mod:`discodiff.pipeline_utils` (config,
builder, pipeline, training task).
"""

from __future__ import annotations

import torch

from .codec.resolve import load_codec
from .conditioning import VocalConditioner
from .conditioning.resolve import load_text_encoder
from .config import TINY, DiscoDiffConfig
from .diffusion import make_scheduler
from .errors import ConfigError
from .latents import LatentStats
from .models import UNet1DConditionModel
from .pipeline import DiscoDiffPipeline
from .pipeline_utils import Family

FAMILY = Family(
    name="discodiff",
    config="discodiff.config:DiscoDiffConfig",
    build="discodiff.build:build_pipeline",
    pipeline="discodiff.pipeline:DiscoDiffPipeline",
    task="discodiff.training.diffusion_task:DiffusionStageTask",
    sample_options=("num_inference_steps", "text_guidance", "vocal_guidance", "scheduler", "primary_latents", "overlap",
                    "output_type"),
    load_options=("codec", "text_encoder"),
)


def build_pipeline(config: DiscoDiffConfig, seed: int = 0, latent_stats: LatentStats | None = None) -> DiscoDiffPipeline:
    """A pipeline with seeded random U-Nets / vocal encoders (no secondary when ``primary_codebooks`` is the codec's
    codebook count); ``latent_stats`` defaults to the unfitted identity."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = load_codec(config.codec.id, config.codec.backend)  # tiny: the one fixed tiny codec, not seeded by `seed`
        text = config.text_encoder
        text_encoder = load_text_encoder(text.kind, text.id, max_length=text.max_length)  # tiny: likewise fixed
        vocal = config.vocal_encoder

        def vocal_encoder() -> VocalConditioner | None:
            settings = {k: v for k, v in vars(vocal).items() if k != "enabled"}
            return VocalConditioner(in_channels=codec.latent_channels, **settings) if vocal.enabled else None
        context_dims = [text_encoder.sequence_dim] + ([vocal.out_dim] if vocal.enabled else [])

        def unet(unet_config, in_channels: int, out_channels: int) -> UNet1DConditionModel:
            return UNet1DConditionModel(in_channels=in_channels, out_channels=out_channels, context_dims=context_dims,
                                        pooled_dim=text_encoder.pooled_dim, **vars(unet_config))

        if config.primary_codebooks > codec.n_codebooks:
            raise ConfigError(f"primary_codebooks={config.primary_codebooks} exceeds the codec's {codec.n_codebooks} "
                              f"codebooks ({config.codec.id}); use 1 … {codec.n_codebooks} ({codec.n_codebooks}: one flat U-Net)")
        primary_channels, channels = config.primary_codebooks * codec.codebook_dim, codec.latent_channels
        primary, primary_vocal_encoder = unet(config.primary, primary_channels, primary_channels), vocal_encoder()
        secondary = secondary_vocal_encoder = None
        if primary_channels < channels:
            secondary = unet(config.secondary, channels, channels - primary_channels)
            secondary_vocal_encoder = vocal_encoder()
    sources = {
        "codec": {"id": config.codec.id, "backend": config.codec.backend, "bundled": config.codec.id == TINY},
        "text_encoder": {"kind": text.kind, "id": text.id, "max_length": text.max_length, "bundled": text.id == TINY},
    }
    stats = latent_stats or LatentStats.identity(codec.n_codebooks, codec.codebook_dim, config.normalize_per)
    return DiscoDiffPipeline(codec, text_encoder, primary, secondary, make_scheduler(config.sampling.scheduler), stats,
                             sources, vars(config.sampling), primary_vocal_encoder, secondary_vocal_encoder)
