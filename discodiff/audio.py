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

from .errors import AudioError, OutputError
from .outputs import AUDIO_OUTPUT_SUFFIXES, atomic_file

SAMPLE_RATE = 44100
SILENCE_DBFS = -60.0


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


class ClippedAudioWarning(UserWarning):
    """A float file holds samples beyond full scale (|x| > 1); they are kept, and clip wherever they are written."""


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
    peak = float(audio.abs().max())
    if peak > 1.0:
        warnings.warn(f"{source}: peak {peak:.2f} is beyond full scale (1.0); the level is kept as is, so normalise the "
                      "file (e.g. discodiff.audio.normalize_loudness) if that is not intended", ClippedAudioWarning, stacklevel=2)
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
    if path.is_dir():
        raise AudioNotFoundError(f"{path}: is a folder, not an audio file; pass a wav/flac/ogg/mp3 file")
    if not path.is_file():
        raise AudioNotFoundError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(f"{path}: cannot decode ({err}); is it a valid wav/flac/ogg/mp3 file?") from err
    _check_wav_length(path)
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if audio.shape[-1] == 0:
        raise EmptyAudioError(f"{path}: the file has zero samples; re-export or remove it")
    return (to_mono(audio) if mono else audio), sr


def _check_wav_length(path: Path) -> None:
    """Raise :class:`AudioDecodeError` when a WAV header announces more audio than the file holds (a cut-off
    copy or download), which libsndfile would otherwise read silently as a shorter signal."""
    if path.suffix.lower() != ".wav":
        return
    size = path.stat().st_size
    with path.open("rb") as handle:
        if handle.read(4) != b"RIFF" or not handle.read(4) or handle.read(4) != b"WAVE":
            return
        while (header := handle.read(8)) and len(header) == 8:
            chunk, length = header[:4], int.from_bytes(header[4:], "little")
            if chunk == b"data":
                available = size - handle.tell()
                if 0 < length < 0xFFFFFFFF and length > available:
                    raise AudioDecodeError(f"{path}: truncated: its header announces {length} bytes of audio but the file "
                                           f"holds {available}; copy or export the file again")
                return
            handle.seek(length + (length & 1), 1)


def mix_with_vocal(accompaniment: torch.Tensor, vocal: torch.Tensor) -> torch.Tensor:
    """``accompaniment [1, T]`` + ``vocal [1, T']`` over the accompaniment's length, scaled down only if it would clip."""
    mixture = accompaniment + vocal[..., : accompaniment.shape[-1]]
    return mixture / max(1.0, float(mixture.abs().max()))


def wav_bytes(num_samples: int, channels: int = 1) -> int:
    """Size of a 16-bit PCM file of ``num_samples`` per channel (an upper bound for flac/ogg)."""
    return 44 + 2 * channels * num_samples


def save_audio(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``audio [C, T]`` (or ``[T]``) as 16-bit PCM wav / flac / ogg chosen by the suffix, atomically.

    Samples are clipped to [-1, 1]; parent directories are created. Check the location first with
    :func:`discodiff.outputs.check_output_file` (``AUDIO_OUTPUT_SUFFIXES``).
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_OUTPUT_SUFFIXES:
        raise OutputError(f"{path}: cannot write audio with suffix '{path.suffix}'; use one of {', '.join(AUDIO_OUTPUT_SUFFIXES)}")
    x = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise AudioError(f"{path}: expected audio shaped [channels, samples], got {x.shape}")
    subtype = "PCM_16" if path.suffix.lower() in {".wav", ".flac"} else None
    with atomic_file(path) as temporary:
        try:
            sf.write(str(temporary), np.clip(x, -1.0, 1.0).T, sample_rate, subtype=subtype)
        except sf.LibsndfileError as err:  # libsndfile reports a full disk or a bad format without an errno
            raise OutputError(f"{path}: cannot write audio ({err}); check free space and the file name") from err
    return path
