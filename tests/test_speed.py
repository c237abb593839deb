"""evaluation.speed: peak memory of a block, wall time by part, and one generation measured for both families."""

from __future__ import annotations

import mmap
import time

import pytest
import torch
from torch import nn

from discodiff.evaluation import speed
from discodiff.evaluation.speed import PeakMemory, measure_generation, part_timers
from discodiff.pipeline_utils import build_from_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def touch_fresh_pages(mib: int, hold: float = 0.0) -> None:
    """Map ``mib`` MiB of new anonymous memory, write every page, wait ``hold`` seconds and unmap it: RSS rises by
    ``mib`` whatever the allocator already holds (a freed NumPy block can be served from pages the heap kept)."""
    block = mmap.mmap(-1, mib * 2**20)
    page = b"x" * mmap.PAGESIZE
    for offset in range(0, mib * 2**20, mmap.PAGESIZE):
        block[offset:offset + mmap.PAGESIZE] = page
    time.sleep(hold)
    block.close()


def test_peak_memory_sees_a_short_spike():
    with PeakMemory() as peak:
        touch_fresh_pages(64)
    assert 60 < peak.added_mib < 100
    with PeakMemory() as idle:
        time.sleep(0.02)
    assert idle.added_mib < 20


def test_peak_memory_samples_where_the_peak_cannot_be_reset(monkeypatch):
    monkeypatch.setattr(speed, "reset_rss_peak", lambda: False)
    with PeakMemory(interval=0.001) as peak:
        touch_fresh_pages(64, hold=0.2)  # 200 samples while it is held
    assert peak._thread is not None and not peak._thread.is_alive()
    assert 60 < peak.added_mib < 100


def test_part_timers_split_the_time_between_modules():
    class Slow(nn.Module):
        def __init__(self, seconds: float):
            super().__init__()
            self.seconds = seconds

        def forward(self, x):
            time.sleep(self.seconds)
            return x

    fast, slow = Slow(0.01), Slow(0.05)
    with part_timers({"fast": fast, "slow": slow}) as seconds:
        for _ in range(2):
            slow(fast(torch.zeros(1)))
    assert 0.02 <= seconds["fast"] < 0.06 and 0.1 <= seconds["slow"] < 0.2
    with part_timers({"fast": fast}) as after:
        pass
    fast(torch.zeros(1))
    assert after["fast"] == 0.0, "hooks are removed when the block ends"


@pytest.mark.parametrize("config,options", [("configs/tiny.yaml", {"num_inference_steps": 2}),
                                            ("configs/ar_tiny.yaml", {})])
def test_one_generation_of_either_family(config, options):
    pipeline = build_from_config(config, seed=0)
    speed, out = measure_generation(pipeline, lambda: pipeline("a chorale", duration=0.5, progress=False, **options), 0.5)
    assert out.audios.shape[-1] == 22050
    assert speed.wall_s > 0 and speed.rtf == pytest.approx(0.5 / speed.wall_s, rel=1e-3)
    assert "codec.decoder" in speed.parts and "text_encoder" in speed.parts and "other" in speed.parts
    models = set(pipeline.trainable_components()) & set(speed.parts)
    assert models, speed.parts
    assert sum(speed.parts.values()) == pytest.approx(speed.wall_s, rel=0.01, abs=0.005)
