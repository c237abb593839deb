"""Sampling time against steps and duration, and U-Net parameter counts per config.

    python -m discodiff.bench.sampling [--configs tiny base] [--steps 10 25] [--durations 5 10] [--count paper]

Models are randomly initialised from ``configs/<name>.yaml`` with a tiny local codec and text encoder
(so ``base`` runs offline: the U-Nets are full size, the frozen encoders are not), guidance on
(batched cond/uncond). Times exclude DAC decoding (``output_type="latent"``). ``--count`` configs are
only counted, on the meta device (the 1.2B ``paper`` U-Nets are never built).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from ..build import build_pipeline
from ..config import DiscoDiffConfig
from ..models import UNet1DConditionModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
OFFLINE = ["codec.id=tiny", "text_encoder.id=tiny"]


def unet_parameter_counts(config: DiscoDiffConfig, text_dim: int = 1024, pooled_dim: int = 1024,
                          channels: int = 72, d: int = 8) -> tuple[int, int]:
    """(primary, secondary) U-Net parameters for the config with Flan-T5-large widths and 44.1 kHz DAC (secondary 0 for
    a flat model)."""
    contexts = [text_dim] + ([config.vocal_encoder.out_dim] if config.vocal_encoder.enabled else [])
    primary_channels = config.primary_codebooks * d
    stages = [(config.primary, (primary_channels, primary_channels))]
    if primary_channels < channels:
        stages.append((config.secondary, (channels, channels - primary_channels)))
    counts = [UNet1DConditionModel.count_parameters(in_channels=in_ch, out_channels=out_ch, context_dims=contexts,
                                                    pooled_dim=pooled_dim, **vars(unet)) for unet, (in_ch, out_ch) in stages]
    return counts[0], sum(counts[1:])


def main() -> None:
    warnings.filterwarnings("ignore", message="latent statistics are not fitted")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "base"])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--durations", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--count", nargs="*", default=["paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()

    for name in args.count:
        primary, secondary = unet_parameter_counts(DiscoDiffConfig.from_yaml(CONFIGS / f"{name}.yaml"))
        print(f"{name:<6} U-Net parameters (Flan-T5-large widths): primary {primary / 1e6:8.1f}M  secondary {secondary / 1e6:8.1f}M")

    print(f"\nsampling time (primary + secondary, guidance on), device={args.device}, dtype={args.dtype}")
    print(f"{'config':<8}{'steps':>6}{'audio s':>9}{'wall s':>9}{'x real time':>13}")
    for name in args.configs:
        pipeline = build_pipeline(DiscoDiffConfig.from_yaml(CONFIGS / f"{name}.yaml", OFFLINE)).to(args.device)
        counts = ", ".join(f"{name} {module.num_parameters() / 1e6:.1f}M"
                           for name, module in pipeline.trainable_components().items() if "vocal" not in name)
        print(f"{name:<8}U-Net parameters: {counts} (tiny text encoder widths)")
        if args.dtype != "float32":
            for module in pipeline.trainable_components().values():
                module.to(getattr(torch, args.dtype))
        vocal_free = dict(text_guidance=3.0, output_type="latent", progress=False)
        pipeline("warm-up", duration=1.0, num_inference_steps=2, **vocal_free)
        baseline = None
        for seconds in args.durations:
            for steps in args.steps:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                pipeline("a chorale", duration=seconds, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), **vocal_free)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                wall = time.perf_counter() - start
                baseline = baseline or wall / (steps * seconds)
                print(f"{name:<8}{steps:>6}{seconds:>9g}{wall:>9.2f}{seconds / wall:>13.2f}"
                      f"   (time per step·second vs first row: {wall / (steps * seconds) / baseline:.2f})")


if __name__ == "__main__":
    main()
