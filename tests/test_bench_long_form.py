"""The seam measure of the long-form benchmark: discontinuities at the joins show, continuous audio does not."""

import numpy as np
import pytest

from discodiff.bench.long_form import seam_measures

RATE = 44100


def chord(seconds: float, phase: float = 0.0, root: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return sum(0.2 * np.sin(2 * np.pi * f * t + phase) for f in (root, root * 1.25, root * 1.5))


def test_joins_of_independent_pieces_show_and_continuous_audio_does_not():
    vocal = chord(12.0, root=440.0)
    continuous = chord(12.0)
    joins = [3.0, 6.0, 9.0]
    middles = [1.5, 4.5, 7.5, 10.5]
    rng = np.random.default_rng(0)
    pieces = [chord(3.0, phase=rng.uniform(0, 2 * np.pi), root=[220.0, 196.0, 246.9, 174.6][i]) for i in range(4)]
    seamed = np.concatenate(pieces)
    smooth = seam_measures(vocal, continuous, RATE, joins, middles)
    broken = seam_measures(vocal, seamed, RATE, joins, middles)
    assert smooth["flux_ratio"] == pytest.approx(1.0, abs=0.3) and smooth["change_ratio"] < 2
    assert broken["flux_ratio"] > 2 * smooth["flux_ratio"] and broken["change_ratio"] > 5 * smooth["change_ratio"]
    assert set(smooth) == {"flux_join", "flux_inside", "flux_ratio", "change_join", "change_inside", "change_ratio",
                           "fit_join", "fit_inside"}
    assert all(np.isfinite(v) for v in broken.values())
