"""Corpus rendering throughput, one worker against N, in one run.

    python -m discodiff.bench.render --pieces 'bach/bwv2*' --workers 2 [--seconds 20]

Prints the real-time factor (seconds of audio rendered per wall-clock second, process start-up
included) of each setting, the speed-up, and whether both settings wrote identical files.
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
import time
from pathlib import Path

from ..corpus.render import render_corpus
from ..data.layout import find_stem_pairs


def same_output(first: Path, second: Path) -> bool:
    """Whether two render roots hold byte-identical stems and metadata for the same tracks."""
    pairs = find_stem_pairs(first)
    names = [
        str(path.relative_to(first))
        for pair in pairs
        for path in (pair.vocals, *pair.accompaniment, pair.mixture, pair.metadata)
    ]
    matched, mismatched, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    return bool(matched) and not mismatched and not errors


def real_time_factor(pieces: list[str], out_dir: Path, workers: int, seconds: float | None, seed: int) -> float:
    """Render ``pieces`` into ``out_dir`` and return audio seconds per wall-clock second."""
    start = time.perf_counter()
    report = render_corpus(pieces, out_dir, seconds=seconds, seed=seed, workers=workers, progress=False)
    wall = time.perf_counter() - start
    print(
        f"workers={workers}: {len(report.rendered)} pieces ({len(report.skipped)} skipped), "
        f"{report.audio_seconds:.1f} s of audio in {wall:.1f} s -> real-time factor {report.audio_seconds / wall:.1f}x"
    )
    return report.audio_seconds / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", nargs="+", default=["bach/bwv2*"], help="Bach corpus paths or globs.")
    parser.add_argument("--workers", type=int, default=2, help="Parallel workers to compare with one.")
    parser.add_argument("--seconds", type=float, default=None, help="Crop each piece (default: whole pieces).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        serial, parallel = Path(scratch) / "serial", Path(scratch) / "parallel"
        serial_rtf = real_time_factor(args.pieces, serial, 1, args.seconds, args.seed)
        parallel_rtf = real_time_factor(args.pieces, parallel, args.workers, args.seconds, args.seed)
        identical = same_output(serial, parallel)
    print(f"speed-up with {args.workers} workers: {parallel_rtf / serial_rtf:.2f}x; identical output: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
