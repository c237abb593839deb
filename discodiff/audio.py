"""Audio I/O: load, validate, mix down, resample, loudness-normalise and save.

Audio tensors are float32 ``[C, T]`` in [-1, 1] (a batch adds a leading ``B``). Every problem with
an input file raises a subclass of :class:`AudioError` whose message names the file and the fix;
silence is only a :class:`SilentAudioWarning`, because silent stems are legitimate data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 44100
SILENCE_DBFS = -60.0


class AudioError(ValueError):
    """Base class for unusable audio input."""


class AudioNotFoundError(AudioError, FileNotFoundError):
    """The path does not exist."""


class AudioDecodeError(AudioError):
    """The file exists but cannot be decoded (corrupt or unsupported)."""


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""


class NonFiniteAudioError(AudioError):
    """The signal contains NaN or infinite samples."""


class AudioTooShortError(AudioError):
    """The signal is shorter than the required minimum."""


class SilentAudioWarning(UserWarning):
    """The signal is (near) silent; it is returned unchanged."""


def rms_dbfs(audio: np.ndarray | torch.Tensor) -> float:
    """Root-mean-square level in dBFS of the whole signal (−inf for digital silence)."""
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def validate(audio: torch.Tensor, sample_rate: int, source: str = "<tensor>", min_seconds: float = 0.0) -> None:
    """Raise the matching :class:`AudioError` for empty, non-finite or too-short ``audio [C, T]``;
    warn when it is silent."""
    if audio.ndim != 2:
        raise AudioError(f"{source}: expected audio shaped [channels, samples], got {tuple(audio.shape)}")
    if audio.shape[-1] == 0:
        raise EmptyAudioError(f"{source}: the file has zero samples; re-export or remove it")
    if not torch.isfinite(audio).all():
        bad = int((~torch.isfinite(audio)).sum())
        raise NonFiniteAudioError(f"{source}: {bad} NaN/inf samples; the file is corrupt, re-export it")
    seconds = audio.shape[-1] / sample_rate
    if seconds < min_seconds:
        raise AudioTooShortError(f"{source}: {seconds:.3f} s long, at least {min_seconds:g} s is required")
    if rms_dbfs(audio) < SILENCE_DBFS:
        warnings.warn(f"{source}: signal is silent (below {SILENCE_DBFS:g} dBFS RMS)", SilentAudioWarning, stacklevel=2)


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample ``audio [C, T]`` with soxr (high quality); a no-op when the rates match."""
    if orig_sr == target_sr:
        return audio
    out = soxr.resample(audio.T.double().numpy(), orig_sr, target_sr, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T)).float()


def to_mono(audio: torch.Tensor) -> torch.Tensor:
    """Average channels: ``[C, T] -> [1, T]``."""
    return audio.mean(dim=0, keepdim=True)


def normalize_loudness(audio: torch.Tensor, sample_rate: int, target_lufs: float = -14.0) -> torch.Tensor:
    """Scale ``audio [C, T]`` to ``target_lufs`` integrated loudness (ITU-R BS.1770 via pyloudnorm).

    Signals too short or too quiet to measure are returned unchanged; the result is peak-limited
    to 1.0 by plain scaling so it stays in [-1, 1].
    """
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate, block_size=min(0.4, audio.shape[-1] / sample_rate))
    loudness = meter.integrated_loudness(audio.T.double().numpy())
    if not np.isfinite(loudness):
        return audio
    out = audio * float(10.0 ** ((target_lufs - loudness) / 20.0))
    peak = float(out.abs().max())
    return out / peak if peak > 1.0 else out


def load_audio(
    path: str | Path,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
    min_seconds: float = 0.0,
    loudness_lufs: float | None = None,
) -> torch.Tensor:
    """Load a wav/flac/ogg/mp3 file as float32 ``[C, T]``.

    Args:
        path: audio file readable by libsndfile.
        sample_rate: resample to this rate (``None`` keeps the file's rate).
        mono: mix down to one channel; ``False`` keeps the file's channels.
        min_seconds: raise :class:`AudioTooShortError` below this duration.
        loudness_lufs: if given, normalise integrated loudness to this many LUFS.
    """
    audio, sr = read_audio(path, mono=mono)
    if sample_rate is not None:
        audio, sr = resample(audio, sr, sample_rate), sample_rate
    validate(audio, sr, str(path), min_seconds)
    if loudness_lufs is not None:
        audio = normalize_loudness(audio, sr, loudness_lufs)
    return audio


def read_audio(path: str | Path, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Decode ``path`` at its native rate: ``([C, T] float32, sample_rate)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioNotFoundError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(f"{path}: cannot decode ({err}); is it a valid wav/flac/ogg/mp3 file?") from err
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if audio.shape[-1] == 0:
        raise EmptyAudioError(f"{path}: the file has zero samples; re-export or remove it")
    return (to_mono(audio) if mono else audio), sr


def save_audio(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``audio [C, T]`` (or ``[T]``) as 16-bit PCM wav / flac / ogg chosen by the suffix.

    Samples are clipped to [-1, 1]; parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise AudioError(f"{path}: expected audio shaped [channels, samples], got {x.shape}")
    subtype = "PCM_16" if path.suffix.lower() in {".wav", ".flac"} else None
    sf.write(str(path), np.clip(x, -1.0, 1.0).T, sample_rate, subtype=subtype)
    return path
