"""Peak memory of DAC encode + decode against duration, whole-signal vs chunked.

    python -m discodiff.bench.codec_memory [--arch tiny|full] [--durations 10 60] [--chunk-seconds 5]

Each measurement runs in a fresh subprocess and reports the peak resident memory added by the
work (peak RSS during encode+decode minus RSS just before it) and the working memory: that peak
minus the result tensors, which must grow with the duration (codes + decoded audio). Chunked
working memory should stay flat as the duration grows; whole-signal processing grows with it.
Subprocesses run with ``MALLOC_MMAP_THRESHOLD_=131072`` so glibc returns freed buffers to the OS
instead of letting the heap ratchet up, which would measure the allocator rather than the codec. ``--arch full`` builds the real
44.1 kHz DAC architecture with random weights (no download; slow on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from ..evaluation.speed import rss_mib


def build_codec(arch: str):
    """The tiny test codec, or the full 44.1 kHz DAC architecture with random weights."""
    from ..codec import DacCodec, build_tiny_codec

    if arch == "tiny":
        return build_tiny_codec()
    from transformers import DacConfig, DacModel

    return DacCodec.from_model(DacModel(DacConfig(sampling_rate=44100)), backend="transformers")


def measure(arch: str, seconds: float, chunk_seconds: float | None) -> dict:
    """Run encode + decode once in this process; return peak added memory (MiB) and wall time."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    codec = build_codec(arch)
    audio = torch.randn(1, 1, int(seconds * codec.sample_rate), generator=torch.Generator().manual_seed(0)) * 0.1
    before = rss_mib()
    start = time.perf_counter()
    latents, codes = codec.encode_with_codes(audio, chunk_seconds=chunk_seconds, progress=False)
    decoded = codec.decode_codes(codes, chunk_seconds=chunk_seconds, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = sum(t.numel() * t.element_size() for t in (latents, codes, decoded)) / 2**20
    return {"seconds": seconds, "chunk_seconds": chunk_seconds, "peak_added_mib": round(peak - before, 1),
            "working_mib": round(peak - before - results, 1), "wall_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--worker", nargs=2, metavar=("SECONDS", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        seconds, chunk = float(args.worker[0]), float(args.worker[1])
        print(json.dumps(measure(args.arch, seconds, chunk if chunk > 0 else None)))
        return

    rows = []
    for chunk in (None, args.chunk_seconds):
        for seconds in args.durations:
            cmd = [sys.executable, "-m", "discodiff.bench.codec_memory", "--arch", args.arch,
                   "--worker", str(seconds), str(chunk or 0)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.splitlines()[-1]))
    print(f"DAC encode+decode peak added memory, arch={args.arch}")
    print(f"{'mode':<16}{'audio s':>8}{'peak MiB':>10}{'working MiB':>12}{'wall s':>8}")
    for r in rows:
        mode = "whole" if r["chunk_seconds"] is None else f"chunked {r['chunk_seconds']:g}s"
        print(f"{mode:<16}{r['seconds']:>8g}{r['peak_added_mib']:>10.1f}{r['working_mib']:>12.1f}{r['wall_s']:>8.2f}")
    lo, hi = min(args.durations), max(args.durations)
    for mode, chunk in (("whole", None), ("chunked", args.chunk_seconds)):
        working = {r["seconds"]: r["working_mib"] for r in rows if r["chunk_seconds"] == chunk}
        print(f"ratio working({hi:g}s)/working({lo:g}s), {mode}: {working[hi] / max(working[lo], 1e-9):.2f}")


if __name__ == "__main__":
    main()
