"""Latent-cache read throughput against on-the-fly encoding of the same crops, in one run.

    python -m discodiff.bench.data [--codec tiny|ID|DIR] [--pieces 'bach/bwv2*'] [--seconds 30] [--crop-seconds 10]

Renders Bach chorales, prepares a latent cache with the codec, then times training crops two ways:
(a) :class:`~discodiff.data.dataset.LatentCropDataset` items read from the memory-mapped cache
(crop, caption, noisy vocal); (b) crops of the same windows and length read from the stem WAVs and
encoded with the codec (accompaniment and vocal in one call), which is what training without a
cache would do. Prints crops/s and crop-seconds/s of each and the ratio. ``--codec tiny`` (the
default) is a tiny random codec, far faster than the real DAC, so it understates the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..codec.resolve import load_codec
from ..corpus.render import render_corpus
from ..data.cache import CacheLayout
from ..data.dataset import LatentCropDataset
from ..data.layout import StemPair
from ..data.prepare import prepare_latent_cache
from ..data.windows import WindowSettings


def cache_rate(dataset: LatentCropDataset, crops: int) -> float:
    """Items per second read from the cache, cycling over windows and epochs."""
    start = time.perf_counter()
    for i in range(crops):
        dataset.set_epoch(i // len(dataset))
        dataset[i % len(dataset)]
    return crops / (time.perf_counter() - start)


def encode_rate(cache_dir: Path, stems_dir: Path, codec, crop_frames: int, crops: int, seed: int = 0) -> float:
    """Crops per second read from the stems and encoded, for the cache's windows and ``crop_frames``."""
    from datasets import load_from_disk

    windows = load_from_disk(str(CacheLayout(cache_dir).dataset_dir))
    rows = windows.select_columns(["track_id", "start_seconds", "num_frames"])
    crop_samples = crop_frames * codec.hop_length
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(crops):
        row = rows[i % len(rows)]
        stems = StemPair.rendered(stems_dir, row["track_id"])
        window_samples = row["num_frames"] * codec.hop_length
        first = round(row["start_seconds"] * codec.sample_rate) + int(rng.integers(max(1, window_samples - crop_samples + 1)))
        audio = [sf.read(path, start=first, frames=crop_samples, dtype="float32", fill_value=0.0)[0]
                 for path in (stems.accompaniment[0], stems.vocals)]
        codec.encode_with_codes(torch.from_numpy(np.stack(audio))[:, None], progress=False)
    return crops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="tiny", help="'tiny', a hub id or a local DacModel directory.")
    parser.add_argument("--codec-backend", default="transformers")
    parser.add_argument("--pieces", nargs="+", default=["bach/bwv66.6", "bach/bwv2.6"], help="Bach corpus paths or globs.")
    parser.add_argument("--seconds", type=float, default=30.0, help="Seconds rendered per piece.")
    parser.add_argument("--window-seconds", type=float, default=29.0)
    parser.add_argument("--crop-seconds", type=float, default=10.0)
    parser.add_argument("--cache-crops", type=int, default=512, help="Crops read from the cache.")
    parser.add_argument("--encode-crops", type=int, default=16, help="Crops encoded on the fly.")
    args = parser.parse_args()

    codec = load_codec(args.codec, args.codec_backend)
    with tempfile.TemporaryDirectory() as scratch:
        stems_dir, cache_dir = Path(scratch) / "stems", Path(scratch) / "cache"
        render_corpus(args.pieces, stems_dir, seconds=args.seconds, seed=0, progress=False)
        # throughput does not depend on the filters; keep every window of the (unmastered, quiet) renders
        windows = WindowSettings(args.window_seconds, min_seconds=min(args.crop_seconds, args.window_seconds), quiet_dbfs=-60.0)
        start = time.perf_counter()
        report = prepare_latent_cache(stems_dir, cache_dir, codec, args.codec, windows=windows, progress=False)
        prepare_seconds = time.perf_counter() - start
        dataset = LatentCropDataset(cache_dir, crop_frames=round(args.crop_seconds * codec.frame_rate))
        crop_seconds = dataset.crop_frames / codec.frame_rate
        cached = cache_rate(dataset, args.cache_crops)
        encoded = encode_rate(cache_dir, stems_dir, codec, dataset.crop_frames, args.encode_crops)
        size_mib = sum(f.stat().st_size for f in CacheLayout(cache_dir).dataset_dir.iterdir()) / 2**20

    print(f"codec {args.codec}: prepared {report.kept_windows} windows ({report.kept_seconds:.0f} s of audio) in "
          f"{prepare_seconds:.1f} s; dataset {size_mib:.1f} MiB; crops of {crop_seconds:.2f} s ({dataset.crop_frames} frames)")
    print(f"{'source':<22}{'crops/s':>10}{'crop-s/s':>12}")
    print(f"{'latent cache (mmap)':<22}{cached:>10.1f}{cached * crop_seconds:>12.1f}")
    print(f"{'audio + encode':<22}{encoded:>10.2f}{encoded * crop_seconds:>12.2f}")
    print(f"cache / on-the-fly ratio: {cached / encoded:.0f}x")


if __name__ == "__main__":
    main()
