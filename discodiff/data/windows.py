"""Cut a track's stems into training windows and drop the unusable ones (SingSong-style filters).

Stems are mono float32 ``[T]`` at one sample rate. Windows of ``window_seconds`` start every
``hop_seconds`` until one reaches the end of the track; that last one may be shorter and is kept when
it lasts at least ``min_seconds``. A window is then kept only if its accompaniment RMS is at least
``quiet_dbfs`` and its vocal RMS exceeds the accompaniment's by at most ``vocal_margin_db``
(SingSong, Donahue et al. 2023). A whole track is skipped when it is shorter than ``min_seconds``
or when both stems are silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio import SILENCE_DBFS, rms_dbfs

TOO_SHORT = "too-short"
SILENT = "silent"
FILTERED_QUIET = "filtered-quiet"
FILTERED_VOCAL_LOUDER = "filtered-vocal-louder"


@dataclass(frozen=True)
class WindowSettings:
    """How tracks are cut and filtered (seconds and dB; see the module docstring).

    ``hop_seconds=None`` means back-to-back windows (hop = window).
    """

    window_seconds: float = 29.0
    hop_seconds: float | None = None
    min_seconds: float = 5.0
    quiet_dbfs: float = -25.0
    vocal_margin_db: float = 5.0

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds={self.window_seconds}: must be positive")
        if self.hop_seconds is not None and not 0 < self.hop_seconds <= self.window_seconds:
            raise ValueError(f"hop_seconds={self.hop_seconds}: must be positive and at most window_seconds={self.window_seconds}")
        if not 0 < self.min_seconds <= self.window_seconds:
            raise ValueError(f"min_seconds={self.min_seconds}: must be positive and at most window_seconds={self.window_seconds}")

    def window_samples(self, sample_rate: int) -> int:
        return round(self.window_seconds * sample_rate)

    def hop_samples(self, sample_rate: int) -> int:
        return round((self.hop_seconds or self.window_seconds) * sample_rate)

    def min_samples(self, sample_rate: int) -> int:
        return round(self.min_seconds * sample_rate)


@dataclass(frozen=True, eq=False)
class StemWindow:
    """One window: its position in the track (``index``, ``start`` in samples) and both stems ``[n]``."""

    index: int
    start: int
    vocals: np.ndarray
    accompaniment: np.ndarray

    def __len__(self) -> int:
        return len(self.accompaniment)


@dataclass
class WindowSelection:
    """What a track yields: kept windows, counts of dropped windows per reason, or a whole-track reason."""

    kept: list[StemWindow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    track_skip_reason: str | None = None


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of windows ``[s, min(s + window, num_samples))`` until one reaches the end."""
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
    return starts


def select_windows(vocals: np.ndarray, accompaniment: np.ndarray, sample_rate: int, settings: WindowSettings) -> WindowSelection:
    """Cut ``vocals [T]`` and ``accompaniment [T]`` into windows and filter them (module docstring)."""
    if vocals.shape != accompaniment.shape or vocals.ndim != 1:
        raise ValueError(f"stems must be equal-length mono [T] arrays, got {vocals.shape} and {accompaniment.shape}")
    if len(vocals) < settings.min_samples(sample_rate):
        return WindowSelection(track_skip_reason=TOO_SHORT)
    if max(rms_dbfs(vocals), rms_dbfs(accompaniment)) < SILENCE_DBFS:
        return WindowSelection(track_skip_reason=SILENT)
    window, selection = settings.window_samples(sample_rate), WindowSelection()
    for index, start in enumerate(window_starts(len(vocals), window, settings.hop_samples(sample_rate))):
        piece = StemWindow(index, start, vocals[start : start + window], accompaniment[start : start + window])
        reason = _drop_reason(piece, settings, sample_rate)
        if reason is None:
            selection.kept.append(piece)
        else:
            selection.skipped[reason] = selection.skipped.get(reason, 0) + 1
    return selection


def _drop_reason(piece: StemWindow, settings: WindowSettings, sample_rate: int) -> str | None:
    if len(piece) < settings.min_samples(sample_rate):
        return TOO_SHORT
    accompaniment_db = rms_dbfs(piece.accompaniment)
    if accompaniment_db < settings.quiet_dbfs:
        return FILTERED_QUIET
    if rms_dbfs(piece.vocals) - accompaniment_db > settings.vocal_margin_db:
        return FILTERED_VOCAL_LOUDER
    return None
