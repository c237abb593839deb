"""How faithfully a codec reconstructs music: the measures a trained codec must pass, as pure functions.

Every measure compares an ``original`` clip with its ``reconstruction`` (the codec's encode → decode of it), both
mono float audio at the same ``sample_rate`` and of the same length, as numpy arrays or torch tensors:

- :func:`mel_distance` — DAC's multi-scale mel distance with the codec training task's settings
  (:class:`discodiff.training.codec_task.MelLossSection`, through :func:`~discodiff.training.codec_task.mel_loss`:
  seven scales, windows 32…2048, L1 of log10 mel magnitudes); 0 for identical clips. Needs the ``dac`` extra.
- :func:`si_sdr_db` — scale-invariant SDR in dB (zero-mean, DAC's ``SISDRLoss`` formula, in float64).
- :func:`pitch_agreement` — for vocals: pYIN f0 (``librosa.pyin``, C2…C7) of both clips on the same frames
  (resampled to :data:`ANALYSIS_RATE`, :data:`PITCH_FRAME` / :data:`PITCH_HOP` samples there); of the frames the
  original is voiced on, the share where the reconstruction's f0 lies within 50 cents (half a semitone), and the
  share the reconstruction calls unvoiced. Given a ``grid_hz`` (a codec's half frame rate), also how close both f0
  tracks lie to multiples of it (:attr:`PitchAgreement.grid_distance`): a decoder that repeats one waveform shape
  per frame or per two frames can only play harmonics of that rate, and its pitch locks to the grid.
- :func:`chroma_similarity` — for accompaniment: frame-wise cosine of constant-Q chroma (``librosa`` chroma_cqt at
  :data:`ANALYSIS_RATE`, hop :data:`CHROMA_HOP`, A440 tuning for both clips: estimating each clip's tuning would
  forgive a reconstruction that is off pitch), averaged over the frames where the original has energy (RMS of at
  least :data:`ENERGY_FLOOR_DB` dBFS); a silent reconstruction frame counts as 0.

:func:`evaluate_codec` runs them all over a set of (vocals, accompaniment) clips, with codebook usage over every
frame of the set (:class:`~discodiff.codec.usage.CodebookUsage`) and the encode and decode real-time factors on one
thread, measured in the same run, and returns a :class:`CodecReport`. pYIN and chroma need ``librosa``
(``pip install 'discodiff[eval]'``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from discodiff.audio import resample
from discodiff.codec.usage import CodebookUsage
from discodiff.errors import AudioError, require_module

if TYPE_CHECKING:
    from discodiff.codec import DacCodec
    from discodiff.codec.family import CodecPipeline
    from discodiff.training.codec_task import MelLossSection

ANALYSIS_RATE = 22050          # pYIN and chroma run at this rate (C7 = 2093 Hz is far below its Nyquist)
PITCH_FMIN_NOTE, PITCH_FMAX_NOTE = "C2", "C7"
PITCH_FRAME, PITCH_HOP = 2048, 256   # 92.9 ms frames every 11.6 ms at ANALYSIS_RATE
HALF_SEMITONE_CENTS = 50.0
CHROMA_HOP = 512               # 23.2 ms at ANALYSIS_RATE
ENERGY_FRAME = 2048
ENERGY_FLOOR_DB = -60.0        # chroma frames quieter than this (original's RMS, dBFS) are not compared
STEMS = ("vocals", "accompaniment")


def _as_batch(audio, name: str) -> tuple[np.ndarray, bool]:
    """``[T]`` → ``([1, T], True)``; ``[B, T]`` or ``[B, 1, T]`` → ``([B, T], False)`` (float64)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float64).numpy()
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 3 and audio.shape[1] == 1:
        audio = audio[:, 0]
    if audio.ndim == 1:
        return audio[None], True
    if audio.ndim != 2:
        raise AudioError(f"{name} must be mono audio [T], [B, T] or [B, 1, T], got shape {tuple(audio.shape)}")
    return audio, False


def _pair(original, reconstruction) -> tuple[np.ndarray, np.ndarray, bool]:
    x, single = _as_batch(original, "original")
    y, _ = _as_batch(reconstruction, "reconstruction")
    if x.shape != y.shape:
        raise AudioError(f"original {tuple(x.shape)} and reconstruction {tuple(y.shape)} must have the same shape; "
                         "trim the reconstruction to the original's length (DacCodec.decode_codes(..., length=T))")
    if x.shape[-1] == 0:
        raise AudioError("original and reconstruction have zero samples")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise AudioError("original or reconstruction holds NaN or infinite samples")
    return x, y, single


def _result(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _mono(audio, name: str) -> np.ndarray:
    x, single = _as_batch(audio, name)
    if not single and x.shape[0] != 1:
        raise AudioError(f"{name} must be one mono clip [T] (or [1, T], [1, 1, T]), got a batch of {x.shape[0]}")
    return x[0]


def _librosa():
    return require_module("librosa", "eval", "pitch and chroma measures")


# --- level and spectrum ----------------------------------------------------------------------------------------


def mel_distance(original, reconstruction, sample_rate: int, settings: MelLossSection | None = None):
    """DAC's multi-scale mel distance (the codec task's ``mel`` loss term, unweighted) per clip.

    Args:
        original, reconstruction: ``[T]`` (one clip) or ``[B, T]`` / ``[B, 1, T]`` (a batch), same shape.
        sample_rate: of both.
        settings: the scales (default: :class:`~discodiff.training.codec_task.MelLossSection`, DAC's).

    Returns:
        A float for one clip, a float64 array ``[B]`` for a batch; 0 for identical clips.
    """
    from discodiff.training.codec_task import MelLossSection, PerSampleL1, mel_loss, require_dac

    require_dac()  # one line naming the dac extra when it is missing
    from audiotools import AudioSignal

    x, y, single = _pair(original, reconstruction)
    loss = mel_loss(settings or MelLossSection(), PerSampleL1())
    with warnings.catch_warnings(), torch.no_grad():  # audiotools notes every change of STFT size, i.e. every scale
        warnings.filterwarnings("ignore", message="stft_data changed shape")
        estimate = AudioSignal(torch.from_numpy(y).float()[:, None], sample_rate)
        reference = AudioSignal(torch.from_numpy(x).float()[:, None], sample_rate)
        values = loss(estimate, reference).double().numpy()
    return _result(values, single)


def si_sdr_db(original, reconstruction):
    """Scale-invariant signal-to-distortion ratio of ``reconstruction`` against ``original`` in dB, per clip.

    DAC's ``SISDRLoss`` (zero-mean, optimal scaling of the reference; its negative) in float64; identical clips give a
    very high value (above 100 dB), unrelated noise about 0 dB or below.

    Args:
        original, reconstruction: ``[T]`` or ``[B, T]`` / ``[B, 1, T]``, same shape.

    Returns:
        A float for one clip, a float64 array ``[B]`` for a batch.
    """
    x, y, single = _pair(original, reconstruction)
    eps = 1e-8
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    scale = ((x * y).sum(axis=-1, keepdims=True) + eps) / ((x * x).sum(axis=-1, keepdims=True) + eps)
    target = scale * x
    signal = np.square(target).sum(axis=-1)
    noise = np.square(y - target).sum(axis=-1)
    return _result(10 * np.log10(signal / np.maximum(noise, 1e-30) + eps), single)


# --- pitch (vocals) --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PitchAgreement:
    """pYIN of a reconstructed vocal against the original's, on the frames the original is voiced on.

    Attributes:
        within_half_semitone: share of those frames where the reconstruction is voiced with an f0 within 50 cents
            of the original's (NaN when ``voiced_frames`` is 0).
        voicing_missed: share of those frames the reconstruction calls unvoiced (NaN when ``voiced_frames`` is 0).
        voiced_frames: frames the original is voiced on.
        grid_distance: on the frames both clips are voiced on, the mean distance of the reconstruction's f0 to the
            nearest multiple of ``grid_hz``, in grid steps (0…0.5; about 0.25 for a pitch unrelated to the grid,
            near 0 for a pitch locked to it); NaN without a grid or such frames.
        grid_distance_original: the same for the original's f0 (the reference, about 0.25).
        grid_frames: the frames both are voiced on.
    """

    within_half_semitone: float
    voicing_missed: float
    voiced_frames: int
    grid_distance: float = math.nan
    grid_distance_original: float = math.nan
    grid_frames: int = 0

    @classmethod
    def pooled(cls, parts: Iterable[PitchAgreement]) -> PitchAgreement:
        """The agreement over all frames of ``parts`` (each clip weighted by its voiced frames)."""
        parts = [part for part in parts if part.voiced_frames]
        frames = sum(part.voiced_frames for part in parts)
        if not frames:
            return cls(math.nan, math.nan, 0)
        within = sum(part.within_half_semitone * part.voiced_frames for part in parts) / frames
        missed = sum(part.voicing_missed * part.voiced_frames for part in parts) / frames
        gridded = [part for part in parts if part.grid_frames]
        grid_frames = sum(part.grid_frames for part in gridded)
        if not grid_frames:
            return cls(within, missed, frames)
        distance = sum(part.grid_distance * part.grid_frames for part in gridded) / grid_frames
        reference = sum(part.grid_distance_original * part.grid_frames for part in gridded) / grid_frames
        return cls(within, missed, frames, distance, reference, grid_frames)


def f0_track(audio, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN of one clip ``[T]`` at the fixed analysis settings: ``(f0 [F] in Hz, NaN where unvoiced; voiced [F] bool)``."""
    librosa = _librosa()
    x = _mono(audio, "audio")
    y = resample(torch.from_numpy(x).float()[None], int(sample_rate), ANALYSIS_RATE)[0].numpy()
    f0, voiced, _ = librosa.pyin(y, fmin=librosa.note_to_hz(PITCH_FMIN_NOTE), fmax=librosa.note_to_hz(PITCH_FMAX_NOTE),
                                 sr=ANALYSIS_RATE, frame_length=PITCH_FRAME, hop_length=PITCH_HOP)
    return f0, voiced & np.isfinite(f0)


def grid_distance(f0: np.ndarray, grid_hz: float) -> np.ndarray:
    """Distance of each f0 (Hz) to the nearest multiple of ``grid_hz``, in grid steps (0…0.5)."""
    steps = f0 / grid_hz
    return np.abs(steps - np.round(steps))


def pitch_agreement(original, reconstruction, sample_rate: int, grid_hz: float | None = None) -> PitchAgreement:
    """How well ``reconstruction`` keeps the pitch of a vocal ``original``: see :class:`PitchAgreement`.

    Args:
        original, reconstruction: one mono clip each, ``[T]`` (or ``[1, T]``, ``[1, 1, T]``), same length.
        sample_rate: of both (resampled to :data:`ANALYSIS_RATE` for pYIN, C2…C7, frame 2048, hop 256).
        grid_hz: a frequency whose multiples the reconstruction's f0 may lock to (a codec's half frame rate,
            :func:`frame_grid_hz`), for :attr:`PitchAgreement.grid_distance`; None: not measured.
    """
    if grid_hz is not None and not (math.isfinite(grid_hz) and grid_hz > 0):
        raise ValueError(f"grid_hz must be a positive frequency in Hz, got {grid_hz!r}")
    x, y, _ = _pair(_mono(original, "original"), _mono(reconstruction, "reconstruction"))
    f0_x, voiced_x = f0_track(x[0], sample_rate)
    f0_y, voiced_y = f0_track(y[0], sample_rate)
    frames = int(voiced_x.sum())
    if not frames:
        return PitchAgreement(math.nan, math.nan, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cents = np.abs(1200 * np.log2(f0_y[voiced_x] / f0_x[voiced_x]))
    within = voiced_y[voiced_x] & (cents <= HALF_SEMITONE_CENTS)
    agreement = PitchAgreement(float(within.mean()), float((~voiced_y[voiced_x]).mean()), frames)
    both = voiced_x & voiced_y
    if grid_hz is None or not both.any():
        return agreement
    return replace(agreement, grid_distance=float(grid_distance(f0_y[both], grid_hz).mean()),
                   grid_distance_original=float(grid_distance(f0_x[both], grid_hz).mean()), grid_frames=int(both.sum()))


def frame_grid_hz(codec: DacCodec | CodecPipeline) -> float:
    """Half a codec's frame rate (43.07 Hz at 44.1 kHz, hop 512): the grid a partly trained decoder's pitch locks to.
    ``codec``: anything with its ``sample_rate`` and ``hop_length`` (a codec, or one in training)."""
    return codec.sample_rate / codec.hop_length / 2


# --- harmony (accompaniment) -----------------------------------------------------------------------------------


def chroma_similarity(original, reconstruction, sample_rate: int) -> float:
    """Mean frame-wise cosine similarity of the constant-Q chroma of ``reconstruction`` and ``original``.

    Args:
        original, reconstruction: one mono clip each, ``[T]`` (or ``[1, T]``, ``[1, 1, T]``), same length.
        sample_rate: of both (resampled to :data:`ANALYSIS_RATE`; chroma_cqt with hop 512).

    Returns:
        The mean over frames where the original's RMS is at least :data:`ENERGY_FLOOR_DB` dBFS (1 for identical
        clips, near 0 for clips with no pitch class in common); NaN when the original has no such frame.
    """
    librosa = _librosa()
    x, y, _ = _pair(_mono(original, "original"), _mono(reconstruction, "reconstruction"))
    x, y = (resample(torch.from_numpy(clip).float(), int(sample_rate), ANALYSIS_RATE)[0].numpy() for clip in (x, y))
    with warnings.catch_warnings():  # the CQT's lowest octaves run on a decimated signal, shorter than its FFT
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal")
        chroma = [librosa.feature.chroma_cqt(y=clip, sr=ANALYSIS_RATE, hop_length=CHROMA_HOP, norm=None,
                                              tuning=0.0) for clip in (x, y)]
    rms = librosa.feature.rms(y=x, frame_length=ENERGY_FRAME, hop_length=CHROMA_HOP)[0]
    count = min(chroma[0].shape[1], chroma[1].shape[1], rms.shape[0])
    a, b = chroma[0][:, :count], chroma[1][:, :count]
    loud = 20 * np.log10(np.maximum(rms[:count], 1e-12)) >= ENERGY_FLOOR_DB
    if not loud.any():
        return math.nan
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    cosine = np.where(norms > 1e-12, (a * b).sum(axis=0) / np.maximum(norms, 1e-12), 0.0)
    return float(cosine[loud].mean())


# --- a codec over a set of clips -------------------------------------------------------------------------------


@dataclass
class CodecReport:
    """Every reconstruction measure of one codec over one set of (vocals, accompaniment) clips.

    Means are over clips (``mel_distance``, ``si_sdr_db``: every clip of both stems, and per stem; ``chroma``: the
    accompaniment clips with energy); the pitch shares are pooled over the vocal frames voiced in the originals, the
    pitch grid distances (to multiples of the codec's half frame rate; about 0.25 for unlocked pitch) over the frames
    voiced in both;
    codebook usage is over every frame of every clip; real-time factors are seconds of audio per second of wall time
    of every encode (decode) call, on ``threads`` CPU threads.
    """

    codec: str | None
    sample_rate: int
    tracks: int
    clips: int
    audio_seconds: float
    mel_distance: float
    mel_distance_vocals: float
    mel_distance_accompaniment: float
    si_sdr_db: float
    si_sdr_db_vocals: float
    si_sdr_db_accompaniment: float
    pitch_within_half_semitone: float
    pitch_voicing_missed: float
    pitch_voiced_frames: int
    pitch_grid_distance: float
    pitch_grid_distance_original: float
    chroma_similarity: float
    codebook_size: int
    codebook_perplexity: list[float]
    codebook_used: list[float]
    encode_rtf: float
    decode_rtf: float
    threads: int
    device: str
    per_track: list[dict] = field(default_factory=list)

    @property
    def codebook_perplexity_min(self) -> float:
        return min(self.codebook_perplexity)

    @property
    def codebook_used_min(self) -> float:
        return min(self.codebook_used)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (None where a measure had nothing to measure), minima of the codebook lists added."""
        record = asdict(self)
        record["codebook_perplexity_min"] = self.codebook_perplexity_min
        record["codebook_used_min"] = self.codebook_used_min
        return _no_nan(record)


def _no_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return value


def _clip_tensor(audio, name: str) -> torch.Tensor:
    x = _mono(audio, name)
    if x.size == 0:
        raise AudioError(f"{name} has zero samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{name} holds NaN or infinite samples")
    return torch.from_numpy(x).float()[None, None]


def _nanmean(values: Sequence[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return float(np.mean(finite)) if finite else math.nan


def evaluate_codec(codec: DacCodec, tracks: Iterable[tuple], names: Sequence[str] | None = None,
                   mel: MelLossSection | None = None, threads: int = 1, progress: bool = True) -> CodecReport:
    """Reconstruct every clip with ``codec`` (encode to codes, decode them) and run every measure.

    Args:
        codec: the codec (every codebook is used); its device is recorded in the report.
        tracks: ``(vocals, accompaniment)`` per track, each one mono clip ``[T]`` (numpy or torch, float) at
            ``codec.sample_rate``; the two may differ in length. Any iterable (e.g. a generator reading files).
        names: a name per track for ``per_track`` (default ``track<i>``).
        mel: mel distance scales (default the codec task's, DAC's).
        threads: torch threads while encoding and decoding (restored afterwards), so the real-time factors are
            comparable between runs; 1 by default.
        progress: a progress bar over tracks.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _librosa()  # refuse before any work when librosa is missing
    from discodiff.training.codec_task import require_dac

    require_dac()
    sample_rate = codec.sample_rate
    size = codec.spec.codebook_size
    usage = CodebookUsage.empty(codec.n_codebooks, size)
    encode_seconds = decode_seconds = audio_seconds = 0.0
    per_track: list[dict] = []
    mel_values: dict[str, list[float]] = {stem: [] for stem in STEMS}
    sisdr_values: dict[str, list[float]] = {stem: [] for stem in STEMS}
    pitches: list[PitchAgreement] = []
    chromas: list[float] = []
    total = len(tracks) if hasattr(tracks, "__len__") else (len(names) if names is not None else None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        codec.decode_codes(codec.encode_codes(torch.zeros(1, 1, codec.hop_length * 8), progress=False), progress=False)
        for index, track in enumerate(tqdm(tracks, total=total, desc="codec quality", unit="track", disable=not progress)):
            if len(track) != 2:
                raise ValueError(f"track {index}: expected a (vocals, accompaniment) pair, got {len(track)} items")
            name = names[index] if names is not None else f"track{index}"
            record: dict = {"track": name}
            for stem, audio in zip(STEMS, track):
                clip = _clip_tensor(audio, f"{name} {stem}")
                start = time.perf_counter()
                codes = codec.encode_codes(clip, progress=False)
                middle = time.perf_counter()
                decoded = codec.decode_codes(codes, length=clip.shape[-1], progress=False)
                end = time.perf_counter()
                encode_seconds += middle - start
                decode_seconds += end - middle
                audio_seconds += clip.shape[-1] / sample_rate
                usage.update(codes)
                original, reconstruction = clip[0, 0].numpy(), decoded[0, 0].float().cpu().numpy()
                record[f"mel_distance_{stem}"] = mel_distance(original, reconstruction, sample_rate, mel)
                record[f"si_sdr_db_{stem}"] = si_sdr_db(original, reconstruction)
                mel_values[stem].append(record[f"mel_distance_{stem}"])
                sisdr_values[stem].append(record[f"si_sdr_db_{stem}"])
                if stem == "vocals":
                    pitch = pitch_agreement(original, reconstruction, sample_rate, frame_grid_hz(codec))
                    pitches.append(pitch)
                    record.update(pitch_within_half_semitone=pitch.within_half_semitone,
                                  pitch_voicing_missed=pitch.voicing_missed, pitch_voiced_frames=pitch.voiced_frames,
                                  pitch_grid_distance=pitch.grid_distance)
                else:
                    record["chroma_similarity"] = chroma_similarity(original, reconstruction, sample_rate)
                    chromas.append(record["chroma_similarity"])
            per_track.append(record)
    finally:
        torch.set_num_threads(previous_threads)
    if not per_track:
        raise ValueError("evaluate_codec got no tracks")
    pitch = PitchAgreement.pooled(pitches)
    every = [stem_values for stem in STEMS for stem_values in mel_values[stem]]
    every_sisdr = [value for stem in STEMS for value in sisdr_values[stem]]
    return CodecReport(
        codec=getattr(codec, "source", None), sample_rate=sample_rate, tracks=len(per_track), clips=2 * len(per_track),
        audio_seconds=audio_seconds,
        mel_distance=float(np.mean(every)), mel_distance_vocals=float(np.mean(mel_values["vocals"])),
        mel_distance_accompaniment=float(np.mean(mel_values["accompaniment"])),
        si_sdr_db=float(np.mean(every_sisdr)), si_sdr_db_vocals=float(np.mean(sisdr_values["vocals"])),
        si_sdr_db_accompaniment=float(np.mean(sisdr_values["accompaniment"])),
        pitch_within_half_semitone=pitch.within_half_semitone, pitch_voicing_missed=pitch.voicing_missed,
        pitch_voiced_frames=pitch.voiced_frames, pitch_grid_distance=pitch.grid_distance,
        pitch_grid_distance_original=pitch.grid_distance_original, chroma_similarity=_nanmean(chromas), codebook_size=size,
        codebook_perplexity=[float(v) for v in usage.perplexity], codebook_used=[float(v) for v in usage.used_share],
        encode_rtf=audio_seconds / max(encode_seconds, 1e-12), decode_rtf=audio_seconds / max(decode_seconds, 1e-12),
        threads=threads, device=str(codec.device), per_track=per_track)
