"""Seconds per codec training step: eager Snake, compiled Snake, and compiled Snake with DAC's discriminators.

    python -m discodiff.bench.codec_step [--config configs/train/codec_small.yaml] [--steps 5] [--warmup 2]
                                         [--threads 1] [--set key=value ...]

Each variant builds the codec training task of ``--config`` (with ``--set`` overrides; no data is read) and runs its
step — ``task.loss`` on a batch of ``data.batch_size`` clips of ``task.clip_seconds`` (seeded noise with a
harmonic tone), backward, clipping and AdamW — ``--warmup`` times untimed (the compiled variants compile then:
that time is printed apart) and ``--steps`` times timed, all in one process on ``--threads`` CPU threads, so the
ratios are measured on the same machine in the same run. The GAN variant steps the task's adversary as the loop does
(``task.gan``'s discriminators; ``task.gan.enabled`` is set for it).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VARIANTS = {"eager Snake": ["task.compile_snake=false"], "compiled Snake": ["task.compile_snake=true"],
            "compiled Snake + GAN": ["task.compile_snake=true", "task.gan.enabled=true"]}


def clips(batch_size: int, samples: int, sample_rate: int) -> torch.Tensor:
    """``[B, 1, T]``: a 220·(b+1) Hz tone with five harmonics under seeded noise, per item."""
    t = torch.arange(samples) / sample_rate
    generator = torch.Generator().manual_seed(0)
    tones = torch.stack([sum(0.2 / k * torch.sin(2 * math.pi * 220 * (b + 1) * k * t) for k in range(1, 6))
                         for b in range(batch_size)])
    return (tones + 0.01 * torch.randn(batch_size, samples, generator=generator))[:, None]


def train_step(task, model: torch.nn.Module, optimizer: torch.optim.Optimizer, audio: torch.Tensor,
               generator: torch.Generator, max_grad_norm: float, **extra) -> None:
    """One step of the codec task as the loop takes it: ``task.loss`` on ``audio`` ``[B, 1, T]`` (``extra``: the
    ``adversary``), backward, clipping at ``max_grad_norm``, the optimiser's step."""
    losses, _ = task.loss(model, audio, generator, **extra)
    losses.mean().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def adversary_of(task, settings, learning_rate: float | None = None) -> dict:
    """``{"adversary": ...}`` for ``train_step`` when ``task`` has discriminators (``task.gan.enabled``), else ``{}``:
    the task's critic with its own AdamW (``settings``; the adversary's learning rate, or ``learning_rate`` × the
    task's ``learning_rate_scale``) at a constant rate, stepped on the CPU as the loop steps it."""
    from accelerate import Accelerator

    from discodiff.training.adversary import Adversary
    from discodiff.training.trainer import adamw

    spec = task.adversary
    if spec is None:
        return {}
    rate = spec.learning_rate if learning_rate is None else learning_rate * task.settings.gan.learning_rate_scale
    critic_optimizer = adamw(spec.module, settings, rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(critic_optimizer, lambda step: 1.0)
    return {"adversary": Adversary(Accelerator(cpu=True), spec.module.train(), critic_optimizer, schedule,
                                   spec.max_grad_norm)}


def time_variant(config_path: str, overrides: list[str], steps: int, warmup: int) -> tuple[float, float]:
    """``(seconds of the warmup steps, mean seconds per timed step)`` of one variant."""
    from discodiff.training import TrainConfig
    from discodiff.training.codec_task import CodecTask
    from discodiff.training.trainer import adamw

    config = TrainConfig.from_yaml(config_path, overrides)
    torch.manual_seed(config.seed)
    task = CodecTask(config, config.task, config.seed)
    model = task.module.train()
    settings = config.optimizer
    optimizer = adamw(model, settings)
    audio = clips(config.data.batch_size, task.clip_samples, task.sample_rate)
    generator = torch.Generator().manual_seed(0)
    extra = adversary_of(task, settings)

    start = time.perf_counter()
    for _ in range(warmup):
        train_step(task, model, optimizer, audio, generator, settings.max_grad_norm, **extra)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        train_step(task, model, optimizer, audio, generator, settings.max_grad_norm, **extra)
    return warm, (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_CONFIGS / "train" / "codec_small.yaml"), help="Codec training config.")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Training config override (repeatable), e.g. --set task.gan.fft_sizes=[1024].")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--steps, --warmup and --threads must be at least 1 (the warmup compiles)")

    from discodiff.training import TrainConfig

    torch.set_num_threads(args.threads)
    config = TrainConfig.from_yaml(args.config, args.overrides)  # a bad config or override fails here, before any work
    print(f"codec step: {Path(args.config).name}, batch {config.data.batch_size} × {config.task.clip_seconds:g} s, "
          f"{args.threads} thread(s), mean of {args.steps} steps after {args.warmup} warmup")
    baseline = None
    for name, overrides in VARIANTS.items():
        warm, seconds = time_variant(args.config, [*args.overrides, *overrides], args.steps, args.warmup)
        baseline = baseline or seconds
        print(f"  {name:<24}{seconds:8.2f} s/step  ×{baseline / seconds:5.2f} vs eager   (warmup {warm:.1f} s)")


if __name__ == "__main__":
    main()
