"""Denoising networks."""

from .unet1d import UNet1DConditionModel, UNet1DOutput

__all__ = ["UNet1DConditionModel", "UNet1DOutput"]
