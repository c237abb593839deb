"""Long-form generation: cutting an output longer than a model's window into overlapping windows.

Every family generates one window at a time (the diffusion family: its training window; the AR family: what its
stages' ``max_length`` admits). A longer output is made window by window, left to right: window ``i`` covers frames
``start … stop`` of the whole output, and its first ``known`` frames (the overlap) were generated already by the
windows before it. The family generates the window given those frames (the diffusion family inpaints them; the AR
family takes them as its context) and keeps only the frames after them, so every output frame is generated once and
the windows join without a cross-fade. With ``overlap = 0`` the windows are independent, the naive concatenation the
seam benchmark compares against.

Windows start every ``window − overlap`` frames; the last one ends at the output's end and may be shorter (it still
starts ``overlap`` frames before the frames it adds). An output that fits one window is one window with nothing known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GenerationError, is_integer, is_real

DEFAULT_OVERLAP_SHARE = 0.25  # a quarter of the window is the default overlap of each window with the frames before it


@dataclass(frozen=True)
class Window:
    """Frames ``start … stop`` (stop exclusive) of the whole output; the first ``known`` of them exist already."""

    start: int
    stop: int
    known: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def new(self) -> slice:
        """The output frames this window adds."""
        return slice(self.start + self.known, self.stop)


def plan_windows(total: int, window: int, overlap: int) -> list[Window]:
    """The windows that make ``total`` frames, each at most ``window`` frames long and overlapping the frames before
    it by ``overlap`` (``0 ≤ overlap < window``). One window (nothing known) when ``total ≤ window``."""
    for name, value in (("total", total), ("window", window)):
        if not is_integer(value) or value < 1:
            raise GenerationError(f"long-form {name}={value!r} frames: must be a whole number ≥ 1")
    if not is_integer(overlap) or not 0 <= overlap < window:
        raise GenerationError(f"overlap={overlap!r} frames: must be a whole number in 0 … {window - 1} (less than the "
                              f"{window}-frame window)")
    if total <= window:
        return [Window(0, total, 0)]
    windows = [Window(0, window, 0)]
    while windows[-1].stop < total:
        start = windows[-1].stop - overlap
        windows.append(Window(start, min(start + window, total), overlap))
    return windows


def overlap_frames(overlap_seconds: float | None, window: int, frame_rate: float) -> int:
    """``overlap_seconds`` (None: :data:`DEFAULT_OVERLAP_SHARE` of the window) → frames, checked against the window."""
    if overlap_seconds is None:
        return round(DEFAULT_OVERLAP_SHARE * window)
    if not is_real(overlap_seconds) or not math.isfinite(overlap_seconds) or overlap_seconds < 0 or \
            round(overlap_seconds * frame_rate) >= window:
        raise GenerationError(f"overlap={overlap_seconds!r} s: must be at least 0 and less than the model's window of "
                              f"{window / frame_rate:.2f} s")
    return round(overlap_seconds * frame_rate)
