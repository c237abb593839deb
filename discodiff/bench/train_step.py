"""Where a training step's time goes: data loading, conditioning (text + vocal encoders), forward+backward, optimizer.

    python -m discodiff.bench.train_step [--config configs/tiny.yaml] [--stage primary] [--batch-size 4]
                                         [--frames 256] [--steps 10] [--mixed-precision no] [--data-dir DIR]

Runs the trainer's pieces — the diffusion family's training task (``DiffusionStageTask``: its ``prepare`` and
``loss`` on its ``StageModel``), AdamW and EMA under an ``Accelerator`` — on a prepared latent cache
(``--data-dir``, read by ``LatentCropDataset``) or, by default, on an in-memory dataset of random latents, so no
prepared data is needed; the statistics stay the identity. "conditioning" is the frozen text
encoder plus the vocal encoder's forward (timed by hooks; its backward counts in forward+backward);
"optimizer" is clipping, the AdamW step, the LR schedule and the EMA update. Means per step after
``--warmup`` steps. Configs that reference hub models (base, paper) run offline only when their weights
are cached or local; otherwise the script says so in one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class RandomLatents(Dataset):
    """``num_items`` items of the training batch contract with standard-normal latents."""

    def __init__(self, num_items: int, channels: int, frames: int):
        generator = torch.Generator().manual_seed(0)
        self.latents = torch.randn(num_items, 2, channels, frames, generator=generator)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict:
        latents, vocal = self.latents[index]
        return {"latents": latents, "vocal_latents": vocal, "frame_mask": torch.ones(latents.shape[-1], dtype=torch.bool),
                "captions": f"a slow piano ballad with strings, take {index}", "track_ids": str(index)}


class PhaseTimer:
    """Accumulates wall time per phase; synchronises the accelerator before each reading."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.start = 0.0

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def begin(self) -> None:
        self.start = self.now()

    def lap(self, phase: str) -> None:
        end = self.now()
        self.totals[phase] += end - self.start
        self.start = end


def time_module_forward(module: torch.nn.Module, timer: PhaseTimer, phase: str) -> None:
    """Add the wall time of every ``module`` forward to ``timer.totals[phase]``."""
    started = []

    def before(*_) -> None:
        started.append(timer.now())

    def after(*_) -> None:
        timer.totals[phase] += timer.now() - started.pop()

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_CONFIGS / "tiny.yaml"), help="Model config.")
    parser.add_argument("--stage", default="primary", choices=("primary", "secondary"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=256, help="Crop length in latent frames (86.1 per second).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--data-dir", help="A prepared latent cache (default: random in-memory latents).")
    args = parser.parse_args(argv)

    from accelerate import Accelerator
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from discodiff.errors import ConfigError
    from discodiff.training.config import ModelSection, TrainConfig
    from discodiff.training.diffusion_task import DiffusionStageTask, DiffusionTaskConfig, ObjectiveSection, model_config

    config = TrainConfig(model=ModelSection(config=str(Path(args.config).resolve())), seed=0,
                         task=DiffusionTaskConfig(stage=args.stage, objective=ObjectiveSection(text_dropout=0.1, vocal_dropout=0.1)))
    model_config(config.model)  # a bad config file is its own error, not missing weights
    try:
        task = DiffusionStageTask(config, config.task, seed=0)
    except (ConfigError, OSError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{args.config}: model weights are not available offline ({first_line}); use the tiny config or cache them",
              file=sys.stderr)
        raise SystemExit(1) from None
    pipeline, stage_model = task.pipeline, task.module

    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    device = accelerator.device
    if args.gradient_checkpointing:
        stage_model.enable_gradient_checkpointing()
    pipeline.text_encoder.to(device)
    if args.data_dir:
        from discodiff.data.dataset import LatentCropDataset, collate_latent_batch

        dataset, collate_fn = LatentCropDataset(args.data_dir, args.frames, stage_model.length_multiple), collate_latent_batch
    else:
        dataset = RandomLatents(args.batch_size * (args.steps + args.warmup), pipeline.codec.latent_channels, args.frames)
        collate_fn = None
    if len(dataset) < args.batch_size * (args.steps + args.warmup):
        raise SystemExit(f"{args.data_dir} has {len(dataset)} items, fewer than --batch-size × (--steps + --warmup)")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers, drop_last=True,
                        collate_fn=collate_fn)
    optimizer = torch.optim.AdamW(stage_model.parameters(), lr=1e-4)
    model, optimizer, loader, scheduler = accelerator.prepare(stage_model.train(), optimizer, loader,
                                                              get_cosine_schedule_with_warmup(optimizer, 10, 1000))
    ema = EMAModel(model.parameters())
    generator = torch.Generator().manual_seed(0)

    timer = PhaseTimer(device)
    if stage_model.vocal_encoder is not None:
        time_module_forward(stage_model.vocal_encoder, timer, "vocal encoder forward")
    batches = iter(loader)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            timer.totals.clear()
        timer.begin()
        batch = next(batches)
        timer.lap("data loading")
        stage_batch = task.prepare(batch, device)
        timer.lap("text encoder")
        losses, _ = task.loss(model, stage_batch, generator)
        accelerator.backward(losses.mean())
        timer.lap("model forward+backward")
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        timer.lap("optimizer")
    accelerator.end_training()

    per_step = {phase: 1000 * total / args.steps for phase, total in timer.totals.items()}
    vocal = per_step.get("vocal encoder forward", 0.0)
    rows = {"data loading": per_step["data loading"], "conditioning": per_step["text encoder"] + vocal,
            "forward+backward": per_step["model forward+backward"] - vocal, "optimizer": per_step["optimizer"]}
    total = sum(rows.values())
    source = args.data_dir or "random latents"
    print(f"train step: {Path(args.config).name} {args.stage} on {source}, batch {args.batch_size} × {args.frames} frames, {device}, "
          f"mixed precision {args.mixed_precision}, {stage_model.unet.num_parameters() / 1e6:.2f}M U-Net parameters, "
          f"mean of {args.steps} steps")
    for phase, ms in rows.items():
        print(f"  {phase:<18}{ms:9.1f} ms  {100 * ms / total:5.1f}%")
    print(f"    (conditioning: text encoder {per_step['text encoder']:.1f} ms, vocal encoder forward {vocal:.1f} ms)")
    print(f"  {'total':<18}{total:9.1f} ms")


if __name__ == "__main__":
    main()
