"""AR vs diffusion sampling speed at a matched parameter count, and the AR KV cache's speed-up.

    python -m discodiff.bench.ar_vs_diffusion [--diffusion configs/bach.yaml] [--ar configs/ar_bach.yaml]
        [--durations 10 29] [--steps 25] [--cache-seconds 10] [--codec DIR] [--device cpu] [--json out.json]

Both models are built with random weights from their configs on the same codec (default: the shipped model's, so the
geometry is the real one: 9 codebooks × 1024 entries at 86.13 frames/s) and the locally built tiny T5 text encoder;
weights do not change the cost of a step. Each measurement runs in a fresh subprocess: text-only generation with text
guidance on (batched cond/uncond in both families), codes/latents out (decoding, the same for both, excluded).
Reported per duration (:func:`discodiff.evaluation.speed.measure_generation`): wall time, real-time factor (audio
seconds per wall second), peak added memory (peak RSS during the call minus RSS before it on the CPU, sampled;
``torch.cuda.max_memory_allocated`` on a GPU), the seconds inside each model, the AR tokens generated per
second (semantic + every codebook's codes) and the diffusion denoising steps per second (U-Net forwards of both
stages), and the ratio of the two wall times. Then the AR model without its KV cache (every step recomputes the
prefix) at ``--cache-seconds``: the cache's speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from ..evaluation.speed import measure_generation
from . import write_json_record

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CODEC = REPO / "discodiff" / "pretrained" / "bach-chorales" / "codec"


def build(config: str, codec: str):
    """A random pipeline of the family ``config`` names, on ``codec`` with the tiny text encoder."""
    from ..pipeline_utils import build_from_config

    return build_from_config(config, [f"codec.id={codec}", "text_encoder.id=tiny"], seed=0)


def parameters(pipeline) -> int:
    return sum(p.numel() for module in pipeline.trainable_components().values() for p in module.parameters())


def measure(config: str, codec: str, seconds: float, steps: int, use_cache: bool, device: str) -> dict:
    """One generation of ``seconds`` in this process: wall time, peak added memory, work done."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipeline = build(config, codec).to(device)
    is_ar = hasattr(pipeline, "stages")
    options = dict(text_guidance=3.0, progress=False)
    if is_ar:
        options.update(output_type="codes", use_cache=use_cache, vocal_guidance=1.0)
    else:
        options.update(output_type="latent", num_inference_steps=steps)
    pipeline("warm-up", duration=0.5, generator=torch.Generator(device).manual_seed(0), **options)
    speed, out = measure_generation(
        pipeline, lambda: pipeline("a calm chorale", duration=seconds, generator=torch.Generator(device).manual_seed(0),
                                   **options), seconds, device)
    wall = speed.wall_s
    record = {"family": "ar" if is_ar else "discodiff", "seconds": seconds, "wall_s": wall, "rtf": speed.rtf,
              "peak_added_mib": speed.peak_added_mib, "parameters": parameters(pipeline), "use_cache": use_cache,
              "parts": speed.parts}
    if is_ar:
        record["tokens"] = int(out.codes.numel() + out.semantic.numel())
        record["tokens_per_s"] = round(record["tokens"] / wall, 1)
    else:
        record["denoising_steps"] = 2 * steps
        record["steps_per_s"] = round(2 * steps / wall, 3)
    return record


def run_worker(config: str, codec: str, seconds: float, steps: int, use_cache: bool, device: str) -> dict:
    command = [sys.executable, "-m", "discodiff.bench.ar_vs_diffusion", "--worker", config, str(seconds),
               "--codec", codec, "--steps", str(steps), "--device", device] + ([] if use_cache else ["--no-cache"])
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusion", default=str(REPO / "configs" / "bach.yaml"), help="diffusion model config")
    parser.add_argument("--ar", default=str(REPO / "configs" / "ar_bach.yaml"), help="AR model config")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 29.0])
    parser.add_argument("--steps", type=int, default=25, help="diffusion inference steps per stage")
    parser.add_argument("--cache-seconds", type=float, default=10.0, help="duration of the KV-cache comparison (0: skip)")
    parser.add_argument("--codec", default=str(DEFAULT_CODEC), help="codec id or directory both models use")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the records here")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.codec, float(args.worker[1]), args.steps, not args.no_cache,
                                 args.device)))
        return

    rows = {}
    for seconds in args.durations:
        for config in (args.diffusion, args.ar):
            record = run_worker(config, args.codec, seconds, args.steps, True, args.device)
            rows[record["family"], seconds] = record
    first = rows["discodiff", args.durations[0]], rows["ar", args.durations[0]]
    print(f"AR vs diffusion sampling, device={args.device}, text guidance on, no decoding; parameters: diffusion "
          f"{first[0]['parameters'] / 1e6:.2f}M, AR {first[1]['parameters'] / 1e6:.2f}M "
          f"(ratio AR/diffusion {first[1]['parameters'] / first[0]['parameters']:.2f}); diffusion {args.steps} steps per stage")
    print(f"{'family':<10}{'audio s':>8}{'wall s':>9}{'x real time':>12}{'peak MiB':>10}{'work/s':>14}")
    for (family, seconds), r in rows.items():
        work = f"{r['tokens_per_s']:.0f} tok/s" if family == "ar" else f"{r['steps_per_s']:.2f} step/s"
        parts = ", ".join(f"{name} {value:.2f}" for name, value in r["parts"].items())
        print(f"{family:<10}{seconds:>8g}{r['wall_s']:>9.2f}{r['rtf']:>12.3f}{r['peak_added_mib']:>10.1f}{work:>14}"
              f"   s in: {parts}")
    for seconds in args.durations:
        ratio = rows["ar", seconds]["wall_s"] / rows["discodiff", seconds]["wall_s"]
        print(f"ratio wall(AR)/wall(diffusion) at {seconds:g} s: {ratio:.2f}")
    records = list(rows.values())
    if args.cache_seconds:
        cached = rows.get(("ar", args.cache_seconds)) or run_worker(args.ar, args.codec, args.cache_seconds, args.steps,
                                                                    True, args.device)
        uncached = run_worker(args.ar, args.codec, args.cache_seconds, args.steps, False, args.device)
        records.append(uncached)
        print(f"AR at {args.cache_seconds:g} s: with KV cache {cached['wall_s']:.2f} s, without {uncached['wall_s']:.2f} s; "
              f"speed-up of the cache {uncached['wall_s'] / cached['wall_s']:.2f}x")
    if args.json:
        write_json_record(args.json, {"device": args.device, "records": records})


if __name__ == "__main__":
    main()
