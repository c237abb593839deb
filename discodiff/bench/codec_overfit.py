"""Which codec learns the pitch soonest on these CPUs: variants overfit the same real vocals for the same wall time.

    python -m discodiff.bench.codec_overfit --data RENDERED [--clips 4] [--seconds 1.0] [--minutes 5 | --steps N] [--checks 3]
        [--lr 1e-3] [--threads 1] [--config configs/train/codec_small.yaml]
        [--variant 'NAME;KEY=VALUE;...' ...]     # default: the config as it is, encoder 32, decoder 384

Every variant builds the codec training task of ``--config`` with its overrides (e.g.
``model.overrides=[encoder_hidden_size=32]``), seeded alike, and trains on one fixed batch: ``--clips`` vocal crops of
``--seconds`` from train-split tracks of ``--data`` (the loud crops ``StemClips`` picks, spread over the tracks) —
the task's own loss (mel, waveform, VQ, quantizer dropout; with ``task.gan.enabled=true`` DAC's discriminators
and feature matching as well, the critic at a constant ``--lr`` × ``task.gan.learning_rate_scale``), AdamW at
``--lr`` after a 20-step warmup — for
``--minutes`` of wall time each (or ``--steps`` steps each: the fair budget where the cores are not idle), in one
process on ``--threads`` threads, so the variants are compared on the same machine in the same run. At ``--checks``
equal fractions of that budget it reconstructs the batch with every codebook
and prints the mel distance, the share of the vocals' voiced frames within half a semitone (pYIN) and the pitch grid
distance (the originals' in the header): a faster-learning codec reaches a higher pitch share in the same time.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_VARIANTS = ["as configured", "encoder 32;model.overrides=[encoder_hidden_size=32]",
                    "decoder 384;model.overrides=[decoder_hidden_size=384]"]
WARMUP_STEPS = 20


@dataclass
class Check:
    """One reconstruction of the batch: after ``steps`` steps and ``seconds`` of training."""

    steps: int
    seconds: float
    mel: float
    pitch_within: float
    grid_distance: float


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``'NAME;KEY=VALUE;...'`` → ``(NAME, [KEY=VALUE, ...])``."""
    name, *overrides = [part.strip() for part in text.split(";")]
    if not name or any("=" not in o for o in overrides):
        raise ValueError(f"--variant {text!r}: write NAME;KEY=VALUE;..., e.g. 'wide;model.overrides=[decoder_hidden_size=384]'")
    return name, overrides


def vocal_batch(data_dir: str, clips: int, clip_samples: int, sample_rate: int) -> torch.Tensor:
    """``[clips, 1, clip_samples]``: training crops of the vocals of train-split tracks spread evenly over ``data_dir``."""
    from discodiff.training.codec_data import StemClips

    dataset = StemClips(data_dir, clip_samples, "train", sample_rate, stems=["vocals"])
    if len(dataset) < clips:
        raise SystemExit(f"--data {data_dir} has {len(dataset)} train-split vocals; lower --clips (asked {clips})")
    picks = np.linspace(0, len(dataset) - 1, clips).round().astype(int)
    return torch.stack([dataset[int(i)]["audio"] for i in picks])


def pitch_of(audio: torch.Tensor, reconstruction: torch.Tensor, sample_rate: int, grid_hz: float) -> tuple[float, float, float]:
    """``(share within half a semitone, reconstruction's grid distance, originals' grid distance)`` over the batch,
    each clip weighted by its voiced frames."""
    from discodiff.evaluation.reconstruction import pitch_agreement

    results = [pitch_agreement(x[0].numpy(), y[0].numpy(), sample_rate, grid_hz) for x, y in zip(audio, reconstruction)]
    voiced = [r for r in results if r.voiced_frames]
    if not voiced:
        raise SystemExit("no clip of the batch is voiced; pick other --data or more --clips")
    frames = np.array([r.voiced_frames for r in voiced], dtype=float)
    grid = [r for r in voiced if r.grid_frames]
    grid_frames = np.array([r.grid_frames for r in grid], dtype=float)
    mean = lambda values, weights: float(np.average(values, weights=weights)) if len(values) else float("nan")  # noqa: E731
    return (mean([r.within_half_semitone for r in voiced], frames), mean([r.grid_distance for r in grid], grid_frames),
            mean([r.grid_distance_original for r in grid], grid_frames))


def overfit(config_path: str, overrides: list[str], data_dir: str, clips: int, seconds: float, minutes: float | None,
            checks: int, learning_rate: float, steps_budget: int | None = None) -> tuple[int, list[Check], float]:
    """Train one variant on its fixed batch for ``minutes`` of training time or, if given, ``steps_budget`` steps;
    returns ``(parameters, checks, the originals' grid distance)``."""
    from discodiff.bench.codec_step import adversary_of, train_step
    from discodiff.evaluation.reconstruction import frame_grid_hz
    from discodiff.training import TrainConfig
    from discodiff.training.codec_task import CodecTask, clip_samples
    from discodiff.training.trainer import adamw

    config = TrainConfig.from_yaml(config_path, [*overrides, f"task.clip_seconds={seconds}"])
    torch.manual_seed(config.seed)
    task = CodecTask(config, config.task, config.seed)
    model = task.module.train()
    optimizer = adamw(model, config.optimizer, learning_rate)
    extra = adversary_of(task, config.optimizer, learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    samples = clip_samples(seconds, task.sample_rate, task.length_multiple)
    audio = vocal_batch(data_dir, clips, samples, task.sample_rate)
    grid_hz = frame_grid_hz(task.pipeline)
    generator = torch.Generator().manual_seed(config.seed)
    parameters = sum(p.numel() for p in task.pipeline.model.parameters())
    results, original_grid = [], float("nan")
    budget = steps_budget or minutes * 60
    steps, trained, next_check = 0, 0.0, 1
    while next_check <= checks:
        start = time.perf_counter()
        train_step(task, model, optimizer, audio, generator, config.optimizer.max_grad_norm, **extra)
        schedule.step()
        trained += time.perf_counter() - start
        steps += 1
        if (steps if steps_budget else trained) >= budget * next_check / checks:
            model.eval()
            with torch.no_grad():
                out = model(audio)
                mel = float(task.losses.parts(out, audio)["mel"].mean())
            within, grid, original_grid = pitch_of(audio, out.audio, task.sample_rate, grid_hz)
            results.append(Check(steps, trained, mel, within, grid))
            model.train()
            next_check += 1
    return parameters, results, original_grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Rendered tracks (discodiff render-corpus); train-split vocals are used.")
    parser.add_argument("--config", default=str(REPO_CONFIGS / "train" / "codec_small.yaml"), help="Codec training config.")
    parser.add_argument("--variant", dest="variants", action="append", default=None, metavar="'NAME;KEY=VALUE;...'",
                        help="A variant: a name and training config overrides (repeatable).")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0, help="Seconds per clip.")
    parser.add_argument("--minutes", type=float, default=5.0, help="Training wall time per variant.")
    parser.add_argument("--steps", type=int, default=None, help="Steps per variant instead of --minutes.")
    parser.add_argument("--checks", type=int, default=3, help="Reconstructions per variant, at equal shares of its budget.")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.clips < 1 or args.checks < 1 or args.threads < 1 or not args.seconds > 0 or not args.minutes > 0 or not args.lr > 0:
        parser.error("--clips, --checks and --threads must be at least 1; --seconds, --minutes and --lr positive")
    try:
        variants = [parse_variant(v) for v in (args.variants or DEFAULT_VARIANTS)]
    except ValueError as error:
        parser.error(str(error))
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data} is not a folder; render one with `discodiff render-corpus --pieces 'bach/*'`")

    from discodiff.training import TrainConfig

    for _, overrides in variants:  # a bad config or override fails here, before any training
        TrainConfig.from_yaml(args.config, overrides)
    torch.set_num_threads(args.threads)
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    print(f"codec overfit: {args.clips} vocal clips × {args.seconds:g} s of {args.data}, {budget} per variant on "
          f"{args.threads} thread(s), lr {args.lr:g}")
    for name, overrides in variants:
        parameters, results, original_grid = overfit(args.config, overrides, args.data, args.clips, args.seconds,
                                                     args.minutes, args.checks, args.lr, args.steps)
        print(f"  {name} ({parameters / 1e6:.2f}M parameters; the originals' grid distance {original_grid:.3f})")
        for check in results:
            print(f"    {check.seconds / 60:5.1f} min  step {check.steps:5d} ({check.seconds / check.steps:.2f} s/step)  "
                  f"mel {check.mel:.3f}  pitch within 50 cents {100 * check.pitch_within:5.1f}%  "
                  f"grid distance {check.grid_distance:.3f}")


if __name__ == "__main__":
    main()
