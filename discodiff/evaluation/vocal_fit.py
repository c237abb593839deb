"""Does an accompaniment fit its vocal? Harmonic and rhythmic agreement of a (vocal, accompaniment) pair.

The measures compare a sung ``vocal`` with an ``accompaniment`` meant for it, two mono float clips at one
``sample_rate`` (numpy arrays or torch tensors ``[T]`` or ``[1, T]``). The two are trimmed to the shorter (they are
taken to start together), which must be at least :data:`MIN_SECONDS` long, and resampled to :data:`ANALYSIS_RATE`;
every analysis runs on the same frames there (hop :data:`HOP`, 23.2 ms):

- :func:`harmonic_agreement` — pYIN f0 of the vocal (``librosa.pyin``, :data:`FMIN_HZ`…:data:`FMAX_HZ`); on each
  voiced frame, the share of the accompaniment's constant-Q chroma (``librosa`` chroma_cqt, A440 tuning, each frame
  normalised to sum 1) in the vocal's pitch class (its rounded MIDI note modulo 12), averaged over the voiced
  frames. 1 when the accompaniment sounds only the vocal's pitch class, about 1/12 (:data:`CHANCE_HARMONIC`) for
  an accompaniment unrelated to the vocal (spread evenly over the pitch classes); accompaniment frames quieter than
  :data:`ENERGY_FLOOR_DB` dBFS (RMS) count as 0.
- :func:`harmonic_consonance` — the same frames and chroma, but the share in the pitch classes that make a major or
  minor triad with the vocal's (intervals :data:`CONSONANT_INTERVALS` above it: unison, thirds, fourth, fifth,
  sixths): about 7/12 (:data:`CHANCE_CONSONANCE`) for an unrelated accompaniment. Four-part writing often leaves the
  melody's pitch class out of the lower voices (the soprano holds the third or fifth of the chord, the others double
  the root), so on rendered chorales the accompaniment's chroma in the vocal's own pitch class barely tells its own
  vocal from another's, while its consonance with the vocal does.
- :func:`rhythmic_agreement` — the Pearson correlation of the onset-strength envelopes (``librosa.onset``
  onset_strength) of the two clips, each max-pooled over ±:data:`POOL_FRAMES` frame so that onsets up to two
  frames (46 ms) apart still coincide: in −1…1, about 0 for unrelated rhythms.

:func:`vocal_fit` computes all three (one resampling, one analysis per clip). When one clip is scored against several
others (a paired benchmark), :func:`vocal_features` and :func:`accompaniment_features` analyse each clip once and
:func:`fit_from_features` scores any pair of them (equal to :func:`vocal_fit` for clips of the same length; for
clips of different lengths, up to the last frames of the longer one).

To show that accompaniments fit *their* vocal, score each accompaniment with its own vocal and with another item's
(:func:`mismatched_pairs`, a fixed derangement), then compare the two paired lists (:func:`paired_comparison`).
pYIN, chroma and onsets need ``librosa`` (``pip install 'discodiff[eval]'``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from discodiff.audio import resample
from discodiff.errors import AudioError, ConfigError, require_module

ANALYSIS_RATE = 22050           # every analysis runs at this rate
HOP = 512                       # 23.2 ms frames at ANALYSIS_RATE, shared by pYIN, chroma, RMS and onsets
PYIN_FRAME = 2048               # 92.9 ms: two periods of FMIN_HZ and more
FMIN_HZ, FMAX_HZ = 65.0, 1050.0  # about C2…C6: the sung range with room to spare
ENERGY_FRAME = 2048
ENERGY_FLOOR_DB = -60.0         # accompaniment frames quieter than this (RMS, dBFS) hold no chroma
POOL_FRAMES = 1                 # onset envelopes are max-pooled over ±1 frame (±23.2 ms)
MIN_SECONDS = 0.5               # shortest overlap of vocal and accompaniment that is scored
CHANCE_HARMONIC = 1 / 12        # harmonic agreement of chroma spread evenly over the 12 pitch classes
CONSONANT_INTERVALS = (0, 3, 4, 5, 7, 8, 9)  # semitones above the vocal's pitch class: the triads that hold it
CHANCE_CONSONANCE = len(CONSONANT_INTERVALS) / 12
FLAT_ENVELOPE = 1e-10           # an onset envelope whose standard deviation is below this is constant (silence)


class PairingError(ConfigError):
    """Paired scores (or a pairing) that cannot be compared: lengths differ, fewer than two pairs, non-finite."""


def _librosa():
    return require_module("librosa", "eval", "vocal-fit measures (pYIN, chroma, onsets)")


# --- inputs ----------------------------------------------------------------------------------------------------


def _clip(audio, name: str) -> np.ndarray:
    """One mono clip ``[T]`` or ``[1, T]`` (numpy or torch) → float64 ``[T]``; AudioError for other shapes, no samples,
    NaN or infinite samples."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(audio, dtype=np.float64)
    while x.ndim > 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise AudioError(f"{name} must be one mono clip [T] or [1, T], got shape {tuple(np.shape(audio))}")
    if x.size == 0:
        raise AudioError(f"{name} has zero samples")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise AudioError(f"{name} holds {bad} NaN or infinite samples; pass finite audio")
    return x


def _rate(sample_rate) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float)) \
            or not math.isfinite(sample_rate) or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise AudioError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _long_enough(samples: int, sample_rate: int, what: str) -> None:
    if samples < MIN_SECONDS * sample_rate:
        raise AudioError(f"{what} {samples / sample_rate:.3f} s ({samples} samples at {sample_rate} Hz); at least "
                         f"{MIN_SECONDS:g} s is needed")


def _analysis_signal(x: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample(torch.from_numpy(x).float()[None], sample_rate, ANALYSIS_RATE)[0].double().numpy()


def _prepared(audio, sample_rate, name: str) -> np.ndarray:
    """One clip, checked (at least :data:`MIN_SECONDS`) and resampled to :data:`ANALYSIS_RATE`."""
    rate = _rate(sample_rate)
    x = _clip(audio, name)
    _long_enough(x.size, rate, f"{name} is")
    return _analysis_signal(x, rate)


def _prepared_pair(vocal, accompaniment, sample_rate) -> tuple[np.ndarray, np.ndarray]:
    """Both clips checked, trimmed to the shorter (at least :data:`MIN_SECONDS`), resampled to :data:`ANALYSIS_RATE`."""
    rate = _rate(sample_rate)
    x, y = _clip(vocal, "vocal"), _clip(accompaniment, "accompaniment")
    length = min(x.size, y.size)
    _long_enough(length, rate, "vocal and accompaniment overlap for only" if x.size != y.size else
                 "vocal and accompaniment are")
    return _analysis_signal(x[:length], rate), _analysis_signal(y[:length], rate)


# --- analyses --------------------------------------------------------------------------------------------------


def _pitch_classes(x: np.ndarray) -> np.ndarray:
    """pYIN of an analysis-rate clip: the pitch class (0 = C … 11 = B) per frame ``[F]`` int64, −1 where unvoiced."""
    librosa = _librosa()
    f0, voiced, _ = librosa.pyin(x, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=ANALYSIS_RATE, frame_length=PYIN_FRAME,
                                 hop_length=HOP)
    voiced = voiced & np.isfinite(f0)
    classes = np.full(f0.shape, -1, dtype=np.int64)
    classes[voiced] = np.round(librosa.hz_to_midi(f0[voiced])).astype(np.int64) % 12
    return classes


def _chroma(y: np.ndarray) -> np.ndarray:
    """Constant-Q chroma of an analysis-rate clip ``[12, F]``, each frame summing to 1 (all 0 where it is quieter than
    :data:`ENERGY_FLOOR_DB`)."""
    librosa = _librosa()
    with warnings.catch_warnings():  # the CQT's lowest octaves run on a decimated signal, shorter than its FFT
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal")
        chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_RATE, hop_length=HOP, norm=None, tuning=0.0)
    rms = librosa.feature.rms(y=y, frame_length=ENERGY_FRAME, hop_length=HOP)[0]
    count = min(chroma.shape[1], rms.shape[0])
    chroma, rms = chroma[:, :count], rms[:count]
    total = chroma.sum(axis=0)
    loud = (20 * np.log10(np.maximum(rms, 1e-12)) >= ENERGY_FLOOR_DB) & (total > 0)
    return np.where(loud, chroma / np.maximum(total, 1e-30), 0.0)


def _onset_envelope(x: np.ndarray) -> np.ndarray:
    """Onset strength of an analysis-rate clip ``[F]`` (librosa's spectral flux of the log-mel spectrogram)."""
    return _librosa().onset.onset_strength(y=x, sr=ANALYSIS_RATE, hop_length=HOP).astype(np.float64)


def voiced_frames(classes: np.ndarray, vocal_name: str) -> np.ndarray:
    """The indices of the voiced frames of pitch classes ``classes [F]`` (−1 unvoiced); an AudioError naming
    ``vocal_name`` when there is none."""
    voiced = np.flatnonzero(classes >= 0)
    if voiced.size == 0:
        raise AudioError(f"{vocal_name} has no voiced frames (pYIN, {FMIN_HZ:g}-{FMAX_HZ:g} Hz); pass a sung or "
                         "melodic vocal")
    return voiced


def _chroma_share(classes: np.ndarray, chroma: np.ndarray, vocal_name: str, intervals=(0,)) -> float:
    """The mean over voiced frames of the chroma in the pitch classes ``intervals`` semitones above the vocal's."""
    count = min(classes.shape[0], chroma.shape[1])
    classes, chroma = classes[:count], chroma[:, :count]
    voiced = voiced_frames(classes, vocal_name)
    return float(sum(chroma[(classes[voiced] + interval) % 12, voiced] for interval in intervals).mean())


def _pooled(envelope: np.ndarray) -> np.ndarray:
    padded = np.pad(envelope, POOL_FRAMES, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * POOL_FRAMES + 1).max(axis=-1)


def _rhythmic(vocal: np.ndarray, accompaniment: np.ndarray, vocal_name: str, accompaniment_name: str) -> float:
    count = min(vocal.shape[0], accompaniment.shape[0])
    centred = []
    for envelope, name in ((vocal, vocal_name), (accompaniment, accompaniment_name)):
        pooled = _pooled(envelope[:count])
        if pooled.std() < FLAT_ENVELOPE:
            raise AudioError(f"{name} is silent (its onset-strength envelope is constant), so it has no rhythm to "
                             "compare; pass audible audio")
        centred.append(pooled - pooled.mean())
    a, b = centred
    return float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


# --- the measures ----------------------------------------------------------------------------------------------


def harmonic_agreement(vocal, accompaniment, sample_rate: int) -> float:
    """The mean share of the accompaniment's chroma in the vocal's pitch class, over the vocal's voiced frames.

    Args:
        vocal, accompaniment: one mono clip each, ``[T]`` or ``[1, T]``; trimmed to the shorter (at least 0.5 s).
        sample_rate: of both (resampled to :data:`ANALYSIS_RATE`; pYIN 65-1050 Hz and chroma_cqt, hop 512).

    Returns:
        In [0, 1]: 1 when the accompaniment sounds only the vocal's pitch class, about 1/12
        (:data:`CHANCE_HARMONIC`) when its chroma is spread evenly; silent accompaniment frames count as 0.

    Raises:
        AudioError: the vocal has no voiced frames, or an input is too short, not finite or not mono.
    """
    x, y = _prepared_pair(vocal, accompaniment, sample_rate)
    return _chroma_share(_pitch_classes(x), _chroma(y), "the vocal")


def harmonic_consonance(vocal, accompaniment, sample_rate: int) -> float:
    """The mean share of the accompaniment's chroma in pitch classes consonant with the vocal's, over voiced frames.

    Consonant: :data:`CONSONANT_INTERVALS` semitones above the vocal's pitch class (those of the major and minor triads
    that hold it). Same inputs, analyses and errors as :func:`harmonic_agreement`.

    Returns:
        In [0, 1]: 1 when the accompaniment sounds only pitch classes consonant with the vocal, about 7/12
        (:data:`CHANCE_CONSONANCE`) when its chroma is spread evenly; silent accompaniment frames count as 0.
    """
    x, y = _prepared_pair(vocal, accompaniment, sample_rate)
    return _chroma_share(_pitch_classes(x), _chroma(y), "the vocal", CONSONANT_INTERVALS)


def rhythmic_agreement(vocal, accompaniment, sample_rate: int) -> float:
    """Pearson correlation of the onset-strength envelopes of vocal and accompaniment (each max-pooled over ±1 frame).

    Args:
        vocal, accompaniment: one mono clip each, ``[T]`` or ``[1, T]``; trimmed to the shorter (at least 0.5 s).
        sample_rate: of both (resampled to :data:`ANALYSIS_RATE`; onset_strength with hop 512).

    Returns:
        In [-1, 1]: 1 for onsets at the same times (within about two frames, 46 ms), about 0 for unrelated rhythms.

    Raises:
        AudioError: an input is silent (a constant envelope; the message names which), too short, not finite or not
        mono.
    """
    x, y = _prepared_pair(vocal, accompaniment, sample_rate)
    return _rhythmic(_onset_envelope(x), _onset_envelope(y), "the vocal", "the accompaniment")


@dataclass(frozen=True)
class VocalFit:
    """How well an accompaniment fits a vocal: :func:`harmonic_agreement` (chance about 1/12),
    :func:`rhythmic_agreement` (−1…1, about 0 for unrelated rhythms) and :func:`harmonic_consonance` (chance about
    7/12)."""

    harmonic: float
    rhythmic: float
    consonance: float


def _fit(classes, chroma, vocal_onsets, accompaniment_onsets, vocal_name: str, accompaniment_name: str) -> VocalFit:
    return VocalFit(harmonic=_chroma_share(classes, chroma, vocal_name),
                    rhythmic=_rhythmic(vocal_onsets, accompaniment_onsets, vocal_name, accompaniment_name),
                    consonance=_chroma_share(classes, chroma, vocal_name, CONSONANT_INTERVALS))


def vocal_fit(vocal, accompaniment, sample_rate: int) -> VocalFit:
    """Every measure of one (vocal, accompaniment) pair (clips ``[T]`` or ``[1, T]`` at ``sample_rate``, trimmed to the
    shorter, at least 0.5 s); the errors of :func:`harmonic_agreement` and :func:`rhythmic_agreement`."""
    x, y = _prepared_pair(vocal, accompaniment, sample_rate)
    return _fit(_pitch_classes(x), _chroma(y), _onset_envelope(x), _onset_envelope(y), "the vocal", "the accompaniment")


# --- one analysis per clip, any pairing ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VocalFeatures:
    """The analyses of one vocal: ``pitch_class [F]`` (0 = C … 11 = B, −1 unvoiced) and ``onsets [F]`` (onset
    strength), on :data:`HOP`-sample frames at :data:`ANALYSIS_RATE`; ``name`` is used in error messages."""

    name: str
    pitch_class: np.ndarray
    onsets: np.ndarray


@dataclass(frozen=True, eq=False)
class AccompanimentFeatures:
    """The analyses of one accompaniment: ``chroma [12, F]`` (frames sum to 1, 0 where silent) and ``onsets [F]``."""

    name: str
    chroma: np.ndarray
    onsets: np.ndarray


def vocal_features(vocal, sample_rate: int, name: str = "the vocal") -> VocalFeatures:
    """Analyse one vocal clip (``[T]`` or ``[1, T]``, at least 0.5 s) for :func:`fit_from_features`."""
    x = _prepared(vocal, sample_rate, name)
    return VocalFeatures(name, _pitch_classes(x), _onset_envelope(x))


def accompaniment_features(accompaniment, sample_rate: int, name: str = "the accompaniment") -> AccompanimentFeatures:
    """Analyse one accompaniment clip (``[T]`` or ``[1, T]``, at least 0.5 s) for :func:`fit_from_features`."""
    y = _prepared(accompaniment, sample_rate, name)
    return AccompanimentFeatures(name, _chroma(y), _onset_envelope(y))


def fit_from_features(vocal: VocalFeatures, accompaniment: AccompanimentFeatures) -> VocalFit:
    """:func:`vocal_fit` of two analysed clips, on the frames they share (both taken to start together)."""
    return _fit(vocal.pitch_class, accompaniment.chroma, vocal.onsets, accompaniment.onsets, vocal.name,
                accompaniment.name)


# --- matched against mismatched --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Scores of items with their own vocal (``matched``) against the same items with another vocal (``mismatched``).

    Attributes:
        matched_mean, mismatched_mean: the means of the two lists.
        difference_mean: the mean of the paired differences matched − mismatched (equal to the difference of the
            means).
        difference_std: their standard deviation (sample, ``ddof=1``).
        n: the number of pairs.
        share_matched_higher: the share of pairs whose matched score is strictly higher (ties count as not higher).
    """

    matched_mean: float
    mismatched_mean: float
    difference_mean: float
    difference_std: float
    n: int
    share_matched_higher: float

    @property
    def difference_sem(self) -> float:
        """The standard error of ``difference_mean``: ``difference_std / sqrt(n)``."""
        return self.difference_std / math.sqrt(self.n)

    def to_dict(self) -> dict:
        """Plain JSON-ready values, ``difference_sem`` added."""
        return {**asdict(self), "difference_sem": self.difference_sem}


def paired_comparison(matched: Sequence[float], mismatched: Sequence[float]) -> PairedComparison:
    """Compare per-item scores ``matched[i]`` and ``mismatched[i]`` of the same item ``i`` (see
    :class:`PairedComparison`); a :class:`PairingError` for lists of different lengths, fewer than 2 pairs or
    non-finite scores."""
    a = np.asarray(matched, dtype=np.float64)
    b = np.asarray(mismatched, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise PairingError(f"matched and mismatched must be flat lists of scores, got shapes {a.shape} and {b.shape}")
    if a.size != b.size:
        raise PairingError(f"matched has {a.size} scores but mismatched has {b.size}; pass one mismatched score per "
                           "matched item (the comparison is paired)")
    if a.size < 2:
        raise PairingError(f"a paired comparison needs at least 2 pairs (for a standard deviation), got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise PairingError("matched and mismatched scores must all be finite numbers")
    difference = a - b
    return PairedComparison(matched_mean=float(a.mean()), mismatched_mean=float(b.mean()),
                            difference_mean=float(difference.mean()), difference_std=float(difference.std(ddof=1)),
                            n=int(a.size), share_matched_higher=float((difference > 0).mean()))


def mismatched_pairs(n: int) -> list[int]:
    """For each of ``n`` items, the index of the vocal it is paired with in the mismatched condition: the next item's
    (``i → (i + 1) % n``), a fixed derangement (no item keeps its own vocal); ``n >= 2``."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 2:
        raise PairingError(f"mismatched pairs need at least 2 items (an integer), got {n!r}")
    return [(i + 1) % int(n) for i in range(int(n))]
