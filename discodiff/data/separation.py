"""Split a mix into vocals and accompaniment with Demucs (the ``separation`` extra).

``pip install 'discodiff[separation]'``; the ``htdemucs`` weights download from the Demucs release
server on first use and are cached under ``$TORCH_HOME/hub/checkpoints``.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..audio import resample
from ..errors import DataError

DEFAULT_SEPARATION_MODEL = "htdemucs"


class StemSeparator(Protocol):
    """What preparation needs from a separator: a name to record and ``mix [C, T]`` → two mono stems ``[1, T]``."""

    model_name: str

    def __call__(self, mix: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vocals [1, T], accompaniment [1, T])`` at ``sample_rate``."""


class SeparationUnavailableError(DataError, RuntimeError):
    """Demucs is not installed or its weights cannot be loaded."""


class DemucsSeparator:
    """Demucs source separation: ``mix [C, T]`` → ``(vocals [1, T], accompaniment [1, T])``.

    The accompaniment is the sum of every source except ``vocals`` (drums, bass, other, …); both are
    mixed down to mono and returned at the input's sample rate.
    """

    def __init__(self, model_name: str = DEFAULT_SEPARATION_MODEL, device: torch.device | str = "cpu"):
        try:
            from demucs.apply import apply_model
            from demucs.pretrained import get_model
        except ImportError as err:
            raise SeparationUnavailableError(
                f"separating mixes needs Demucs ({err}); install it with `pip install 'discodiff[separation]'`"
            ) from err
        try:
            model = get_model(model_name)
        except Exception as err:  # demucs raises its own, urllib's or torch.hub's errors for missing weights
            raise SeparationUnavailableError(
                f"Demucs weights '{model_name}' could not be loaded ({type(err).__name__}: {err}); they download on first "
                "use, so run once with network access or copy them into $TORCH_HOME/hub/checkpoints"
            ) from err
        if "vocals" not in model.sources:
            raise SeparationUnavailableError(f"Demucs model '{model_name}' has no 'vocals' source ({model.sources})")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.model_name = model_name
        self._apply_model = apply_model

    @torch.inference_mode()
    def __call__(self, mix: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Separate ``mix [C, T]`` (any channel count) at ``sample_rate``; see the class docstring."""
        channels = self.model.audio_channels
        audio = resample(mix.float(), sample_rate, self.model.samplerate)
        audio = audio.expand(channels, -1) if audio.shape[0] == 1 else audio[:channels]
        reference = audio.mean(dim=0)
        mean, std = reference.mean(), reference.std().clamp_min(1e-8)  # as `demucs.separate` normalises
        sources = self._apply_model(self.model, ((audio - mean) / std)[None], device=self.device, shifts=0,
                                     progress=False)[0]  # shifts=0: no random time shift (deterministic)
        sources = (sources * std + mean).cpu()
        vocal_index = self.model.sources.index("vocals")
        vocals = sources[vocal_index]
        accompaniment = sources.sum(dim=0) - vocals
        return tuple(resample(stem.mean(dim=0, keepdim=True), self.model.samplerate, sample_rate)
                     for stem in (vocals, accompaniment))
