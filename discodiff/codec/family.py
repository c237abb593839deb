"""The ``codec`` model family: a DAC codec (``transformers.DacModel``) that we train ourselves.

A codec model is not a generator: its family is declared with ``generates=False``, so ``discodiff sample``
refuses it, and :func:`discodiff.load_pipeline` on a codec model directory returns a
:class:`~discodiff.codec.DacCodec` (what ``discodiff reconstruct --codec DIR``, ``prepare --codec DIR`` and a
diffusion model's ``codec.id: DIR`` load too).

- :class:`CodecModelConfig` — the ``transformers.DacConfig`` fields we choose (``configs/codec/*.yaml``), typed and
  range-checked; ``family: codec``.
- :func:`build_codec` — ``(config, seed) →`` :class:`CodecPipeline` with DAC's own initialisation (see
  :func:`dac_init`), seeded.
- :class:`CodecPipeline` — the model while it is built or trained; ``save_pretrained(dir)`` writes the ``DacModel``
  directory (``config.json`` + ``model.safetensors``, without weight norm) plus ``pipeline.json`` naming the family;
  ``from_pretrained(dir)`` returns a :class:`~discodiff.codec.DacCodec`.
- :data:`FAMILY` — the family descriptor; its training task is :class:`discodiff.training.codec_task.CodecTask`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..configuration import bounded, load_config
from ..errors import ConfigError, GenerationError
from ..outputs import atomic_directory
from ..pipeline_utils import FAMILY_KEY, PIPELINE_FILE, Family
from .dac_codec import DacCodec

FAMILY_NAME = "codec"
CONFIG_HINT = "see configs/codec/ for tiny.yaml and small.yaml"

FAMILY = Family(
    name=FAMILY_NAME,
    config="discodiff.codec.family:CodecModelConfig",
    build="discodiff.codec.family:build_codec",
    pipeline="discodiff.codec.family:CodecPipeline",
    task="discodiff.training.codec_task:CodecTask",
    generates=False,
)


@dataclass
class CodecModelConfig:
    """The geometry and widths of a DAC codec (the ``transformers.DacConfig`` fields we choose).

    Defaults are the public 44.1 kHz DAC (``descript/dac_44khz``: 76M parameters); ``configs/codec/small.yaml`` is
    the ~2M-parameter codec we train on the CPU. The hop (samples per latent frame) is the product of
    ``downsampling_ratios``; the decoder upsamples by ``upsampling_ratios``, which must be the downsampling ratios
    reversed (``transformers.DacConfig`` always derives them so). ``quantizer_dropout`` is the share of each
    training batch that is quantised with a random number of codebooks (DAC: 0.5).
    """

    family: str = bounded(FAMILY_NAME, choices=(FAMILY_NAME,))
    sampling_rate: int = bounded(44100, low=8000, high=192000)
    encoder_hidden_size: int = bounded(64, low=1, high=1024)
    downsampling_ratios: list[int] = bounded(default_factory=lambda: [2, 4, 8, 8], low=2, high=32)
    decoder_hidden_size: int = bounded(1536, low=2, high=8192)
    upsampling_ratios: list[int] = bounded(default_factory=lambda: [8, 8, 4, 2], low=2, high=32)
    n_codebooks: int = bounded(9, low=1, high=64)
    codebook_size: int = bounded(1024, low=2, high=65536)
    codebook_dim: int = bounded(8, low=1, high=1024)
    quantizer_dropout: float = bounded(0.5, low=0.0, high=1.0)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> CodecModelConfig:
        config = load_config(cls, path, overrides, hint=CONFIG_HINT)
        config.check(str(path))
        return config

    def check(self, where: str = "codec config") -> None:
        """Raise a :class:`ConfigError` for values that are wrong in combination (a field range cannot say)."""
        if not self.downsampling_ratios:
            raise ConfigError(f"{where}: downsampling_ratios must list at least one ratio, e.g. [2, 4, 8, 8]")
        if list(self.upsampling_ratios) != list(reversed(self.downsampling_ratios)):
            raise ConfigError(f"{where}: upsampling_ratios {self.upsampling_ratios} must be downsampling_ratios reversed "
                              f"({list(reversed(self.downsampling_ratios))}); transformers' DacModel decodes with those")
        if self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(f"{where}: codebook_size must be a power of 2 (DAC stores log2 bits per code), got "
                              f"{self.codebook_size}; e.g. 1024")
        levels = 2 ** len(self.upsampling_ratios)
        if self.decoder_hidden_size < levels:
            raise ConfigError(f"{where}: decoder_hidden_size {self.decoder_hidden_size} halves in each of the "
                              f"{len(self.upsampling_ratios)} decoder blocks; give at least {levels}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)

    def dac_config(self):
        """The ``transformers.DacConfig`` of this codec."""
        from transformers import DacConfig

        return DacConfig(
            sampling_rate=self.sampling_rate,
            encoder_hidden_size=self.encoder_hidden_size,
            downsampling_ratios=list(self.downsampling_ratios),
            decoder_hidden_size=self.decoder_hidden_size,
            n_codebooks=self.n_codebooks,
            codebook_size=self.codebook_size,
            codebook_dim=self.codebook_dim,
            quantizer_dropout=float(self.quantizer_dropout),
        )

    @classmethod
    def from_dac_config(cls, config) -> CodecModelConfig:
        """The fields of a ``transformers.DacConfig`` (e.g. of a saved codec directory)."""
        ratios = [int(r) for r in config.downsampling_ratios]
        return cls(sampling_rate=int(config.sampling_rate), encoder_hidden_size=int(config.encoder_hidden_size),
                   downsampling_ratios=ratios, decoder_hidden_size=int(config.decoder_hidden_size),
                   upsampling_ratios=ratios[::-1], n_codebooks=int(config.n_codebooks),
                   codebook_size=int(config.codebook_size), codebook_dim=int(config.codebook_dim),
                   quantizer_dropout=float(config.quantizer_dropout))


def dac_init(model: nn.Module) -> nn.Module:
    """DAC's effective initialisation, in place: PyTorch's default for every convolution with zero ``Conv1d`` biases,
    codebooks ``N(0, 1)``, Snake ``alpha = 1``.

    (``dac.DAC`` applies ``trunc_normal(std=0.02)`` to its ``Conv1d`` weights, but they are weight-normed already, so
    only the zero biases survive the next forward; ``transformers``' own std-0.02 initialisation would start the
    encoder near zero.)
    """
    for module in model.modules():
        if isinstance(module, nn.Conv1d):
            module.reset_parameters()
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.ConvTranspose1d):
            module.reset_parameters()
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight)
        elif hasattr(module, "alpha") and isinstance(module.alpha, nn.Parameter):
            nn.init.ones_(module.alpha)
    return model


def without_weight_norm(model: nn.Module) -> nn.Module:
    """``model`` itself when no weight is parametrised, else a copy with every parametrisation folded into plain weights."""
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(module) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


class CodecPipeline:
    """A ``transformers.DacModel`` and its :class:`CodecModelConfig`, as built or trained (not a generator)."""

    def __init__(self, model: nn.Module, config: CodecModelConfig):
        self.model, self.config = model, config

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def default_duration(self) -> float:
        return 0.0

    def trainable_components(self) -> dict[str, nn.Module]:
        return {"codec": self.model}

    def __call__(self, *args, **kwargs):
        raise GenerationError("a codec model does not generate music from prompts; encode and decode audio with "
                              "`discodiff reconstruct IN OUT --codec DIR` (or load it with DacCodec.from_pretrained)")

    def codec(self) -> DacCodec:
        """A frozen :class:`DacCodec` over a copy of the weights (plain, without weight norm)."""
        model = copy.deepcopy(without_weight_norm(self.model))
        return DacCodec.from_model(model, backend="transformers")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the ``DacModel`` directory (``config.json`` + ``model.safetensors``; weight norm folded in) and
        ``pipeline.json`` (``{"family": "codec", ...}``), atomically: an earlier directory stays whole until the new
        one is complete."""
        directory = Path(directory)
        model = without_weight_norm(self.model)
        with atomic_directory(directory) as build:
            model.save_pretrained(str(build))
            manifest = {FAMILY_KEY: FAMILY_NAME, "config": asdict(self.config)}
            (build / PIPELINE_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device=None) -> DacCodec:
        """The codec in ``directory`` as a frozen :class:`DacCodec` (what encoding, decoding and data preparation use)."""
        codec = DacCodec.from_pretrained(directory)
        return codec.to(device) if device is not None else codec

    @classmethod
    def load_trainable(cls, directory: str | Path) -> CodecPipeline:
        """The codec in ``directory`` as a trainable pipeline (to fine-tune it: ``model.init_from``)."""
        from .backends import load_local_transformers_dac

        model = load_local_transformers_dac(Path(directory))
        return cls(model, CodecModelConfig.from_dac_config(model.config))


def build_codec(config: CodecModelConfig, seed: int = 0) -> CodecPipeline:
    """A codec with DAC's initialisation (:func:`dac_init`) drawn from ``seed`` (the global RNG is left as it was)."""
    from transformers import DacModel

    config.check()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = dac_init(DacModel(config.dac_config()))
    return CodecPipeline(model, config)
