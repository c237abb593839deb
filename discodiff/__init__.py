"""discodiff: text- and vocal-conditioned music generation with coarse-to-fine latent diffusion on DAC latents."""

__version__ = "0.1.0"
