"""DAC's adversarial terms for the codec task: its discriminators and its LSGAN + feature-matching losses, per sample.

The discriminator is ``dac.model.discriminator.Discriminator`` (multi-period ``periods``, multi-scale ``rates``,
multi-band complex-STFT ``fft_sizes``; DAC's defaults [2, 3, 5, 7, 11], [], [2048, 1024, 512]). Its output is one
list of feature maps per sub-discriminator, the last map being its logits. The losses are those of
``dac.nn.loss.GANLoss``::

    discriminator: Σ_d mean(D_d(x̂)²) + mean((1 − D_d(x))²)
    generator:     adversarial = Σ_d mean((1 − D_d(x̂))²),  feature = Σ_d Σ_layer mean|F(x̂) − F(x)|

reduced per sample (``[B]``): every sample's maps have the same size, so the batch mean is DAC's loss exactly.

Sizes on this corpus's clips (0.5 s): an MPD (any period) has 8.2M parameters, far more than the 3.2M codec it
would judge, and takes about as long as an MRD; an MRD has 0.47M.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from discodiff.configuration import bounded
from discodiff.errors import ConfigError

FeatureMaps = list[list[torch.Tensor]]


@dataclass
class GanSection:
    """The codec task's ``task.gan`` section: DAC's discriminators and the adversary's optimiser settings (AdamW with the
    run's betas at ``learning_rate_scale`` × ``optimizer.learning_rate``, clipped at DAC's 10)."""

    enabled: bool = False
    periods: list[int] = bounded(default_factory=lambda: [2, 3, 5, 7, 11], low=1, high=1024)
    rates: list[int] = bounded(default_factory=list, low=1, high=16)
    fft_sizes: list[int] = bounded(default_factory=lambda: [2048, 1024, 512], low=16, high=65536)
    learning_rate_scale: float = bounded(1.0, low=0.0, low_open=True)
    max_grad_norm: float = bounded(10.0, low=0.0, low_open=True)

    def check(self, where: str) -> None:
        if self.enabled and not (self.periods or self.rates or self.fft_sizes):
            raise ConfigError(f"{where}: task.gan.enabled=true with no discriminator (task.gan.periods, rates and "
                              "fft_sizes are all empty); list at least one, e.g. task.gan.fft_sizes=[1024]")


def build_discriminator(settings: GanSection, sample_rate: int) -> nn.Module:
    """``dac.model.discriminator.Discriminator`` with ``settings``' sub-discriminators (weight norm, DAC's bands)."""
    from dac.model.discriminator import Discriminator

    with warnings.catch_warnings():  # dac builds its convolutions with torch's deprecated weight_norm: not ours to fix
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*weight_norm")
        return Discriminator(rates=list(settings.rates), periods=list(settings.periods),
                             fft_sizes=list(settings.fft_sizes), sample_rate=sample_rate)


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def discriminator_loss(fake: FeatureMaps, real: FeatureMaps) -> torch.Tensor:
    """DAC's LSGAN discriminator loss, ``[B]``, from the maps of the (detached) reconstruction and of the clip."""
    return sum(per_sample_mean(f[-1].square()) + per_sample_mean((1 - r[-1]).square()) for f, r in zip(fake, real))


def generator_losses(fake: FeatureMaps, real: FeatureMaps) -> tuple[torch.Tensor, torch.Tensor]:
    """``(adversarial [B], feature [B])``: DAC's LSGAN generator loss and its feature matching (L1 to the clip's maps,
    which carry no gradient), from the maps of the reconstruction and of the clip."""
    adversarial = sum(per_sample_mean((1 - f[-1]).square()) for f in fake)
    feature = sum(per_sample_mean((f_map - r_map.detach()).abs())
                  for f, r in zip(fake, real) for f_map, r_map in zip(f[:-1], r[:-1]))
    return adversarial, feature
