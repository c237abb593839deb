"""Tiny random DAC codecs for tests, examples and offline demos (audiocraft-style debug models).

They keep DAC's architecture and the 44.1 kHz / 512-hop geometry but have a few thousand
parameters, so a test encodes seconds of audio in milliseconds. Their output is not music.
"""

from __future__ import annotations

import torch

from .dac_codec import DacCodec


def tiny_dac_config(
    n_codebooks: int = 9,
    codebook_dim: int = 8,
    codebook_size: int = 64,
    sample_rate: int = 44100,
    downsampling_ratios: tuple[int, ...] = (2, 4, 8, 8),
    encoder_hidden_size: int = 4,
    decoder_hidden_size: int = 32,
):
    """A ``transformers.DacConfig`` with the given geometry and tiny widths."""
    from transformers import DacConfig

    return DacConfig(
        encoder_hidden_size=encoder_hidden_size,
        downsampling_ratios=list(downsampling_ratios),
        decoder_hidden_size=decoder_hidden_size,
        n_codebooks=n_codebooks,
        codebook_size=codebook_size,
        codebook_dim=codebook_dim,
        sampling_rate=sample_rate,
    )


def build_tiny_codec(seed: int = 0, **config_kwargs) -> DacCodec:
    """A :class:`DacCodec` (transformers backend) with seeded random weights; see :func:`tiny_dac_config`.

    Codebook vectors are drawn N(0, 1) so that nearest-neighbour snapping is well spread.
    """
    from transformers import DacModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DacModel(tiny_dac_config(**config_kwargs))
        for quantizer in model.quantizer.quantizers:
            torch.nn.init.normal_(quantizer.codebook.weight)
    return DacCodec.from_model(model, backend="transformers")


def build_tiny_descript_dac(seed: int = 0, n_codebooks: int = 9, codebook_dim: int = 8, codebook_size: int = 64):
    """A tiny ``dac.DAC`` with seeded random weights (needs the ``dac`` package)."""
    import dac

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dac.DAC(
            encoder_dim=4, encoder_rates=[2, 4, 8, 8], decoder_dim=32, decoder_rates=[8, 8, 4, 2],
            n_codebooks=n_codebooks, codebook_size=codebook_size, codebook_dim=codebook_dim, sample_rate=44100,
        ).eval()
