"""discodiff: text- and vocal-conditioned music generation with coarse-to-fine latent diffusion on DAC latents."""

__version__ = "0.1.0"
__all__ = ["DiscoDiffPipeline", "__version__", "load_pipeline"]


def __getattr__(name: str):
    """Import the pipeline and the family loader lazily, so `discodiff --help` and light modules load fast."""
    if name == "DiscoDiffPipeline":
        from .pipeline import DiscoDiffPipeline

        return DiscoDiffPipeline
    if name == "load_pipeline":
        from .pipeline_utils import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'discodiff' has no attribute '{name}'")
