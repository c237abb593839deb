"""discodiff: text- and vocal-conditioned music generation with coarse-to-fine latent diffusion on DAC latents."""

__version__ = "0.1.0"
__all__ = ["DiscoDiffPipeline", "__version__"]


def __getattr__(name: str):
    """Import the pipeline lazily, so `discodiff --help` and light modules load fast."""
    if name == "DiscoDiffPipeline":
        from .pipeline import DiscoDiffPipeline

        return DiscoDiffPipeline
    raise AttributeError(f"module 'discodiff' has no attribute '{name}'")
