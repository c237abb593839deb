"""Shared fixtures: tiny random codecs and short real-valued signals. No network, no GPU."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import numpy as np
import pytest
import torch

from discodiff.codec import build_tiny_codec

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one intra-op thread each, or
    torch.set_num_threads(1)                # OpenMP threads of side-by-side workers oversubscribe the cores


def tone(seconds: float, sample_rate: int = 44100, freqs=(220.0, 277.2, 329.6), seed: int = 0) -> torch.Tensor:
    """A chord with a little noise: ``[1, T]`` float32 in [-1, 1]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / (2 * len(freqs)) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(x.astype(np.float32))[None]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``), as the
    subprocesses get (OMP_NUM_THREADS=1): on a busy 2-core machine OpenMP oversubscription makes the tiny model's
    steps up to 100× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_codec():
    return build_tiny_codec(seed=0)


@pytest.fixture(scope="session")
def tiny_codec_k4d4():
    """A codec whose geometry differs from 44.1 kHz DAC (K=4, d=4) to catch hard-coded 72s."""
    return build_tiny_codec(seed=1, n_codebooks=4, codebook_dim=4, codebook_size=32)
