"""A toy second model family, known only to the tests: ``family: toy_family:FAMILY`` (this folder on ``sys.path``;
subprocesses get it through ``PYTHONPATH``).

It shows what a family supplies and nothing more — no edit of the training loop, the loaders or the CLI:

- :class:`ToyConfig` (``family`` + ``from_yaml``), :func:`build_toy` (config, seed → pipeline) and :data:`FAMILY`;
- :class:`ToyPipeline`: one linear layer maps per-frame Gaussian noise ``[B, L, noise_dim]`` to ``hop_length``
  samples per frame, so it learns (roughly) the mean waveform frame of its data; the shared call
  ``pipe(prompt, vocal=None, duration=None, generator=None, progress=True)`` → ``.audios [B, 1, T]``,
  ``.sample_rate``; ``save_pretrained`` writes ``pipeline.json`` (the family), ``config.json`` and
  ``model.safetensors``;
- :class:`ToyTask`, its :class:`~discodiff.training.TrainingTask`, on :class:`ToyClips` (``data.dataset:
  toy_family:ToyClips``), random crops of the sine clips :func:`write_toy_data` writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from discodiff.configuration import bounded, load_config
from discodiff.guidance import draw_normal
from discodiff.outputs import atomic_directory
from discodiff.pipeline_utils import PIPELINE_FILE, Family
from discodiff.training import TaskConfig, TaskSamples, TrainingTask
from discodiff.training.data import check_batch_keys

FAMILY_PATH = "toy_family:FAMILY"
CRASH_AFTER_STEP, CRASH_STATUS = "TOY_CRASH_AFTER_STEP", 3  # environment variable: crash the run after this checkpoint
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"

FAMILY = Family(name="toy", config="toy_family:ToyConfig", build="toy_family:build_toy",
                pipeline="toy_family:ToyPipeline", task="toy_family:ToyTask")


@dataclass
class ToyConfig:
    family: str = bounded(FAMILY_PATH, choices=(FAMILY_PATH,))
    sample_rate: int = bounded(8000, low=1)
    hop_length: int = bounded(80, low=1)
    noise_dim: int = bounded(4, low=1)
    duration: float = bounded(0.1, low=0.0, high=10.0, low_open=True)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> ToyConfig:
        return load_config(cls, path, overrides)


class ToyModel(nn.Module):
    """noise ``[B, L, noise_dim]`` → audio ``[B, 1, L·hop_length]``."""

    def __init__(self, noise_dim: int, hop_length: int):
        super().__init__()
        self.linear = nn.Linear(noise_dim, hop_length)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.linear(noise).flatten(1)[:, None]


@dataclass
class ToyOutput:
    audios: torch.Tensor
    sample_rate: int


class ToyPipeline:
    def __init__(self, model: ToyModel, config: ToyConfig):
        self.model, self.config = model, config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def default_duration(self) -> float:
        return self.config.duration

    def trainable_components(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def noise(self, batch_size: int, num_samples: int, generator=None) -> torch.Tensor:
        frames = math.ceil(num_samples / self.config.hop_length)
        return draw_normal((batch_size, frames, self.config.noise_dim), generator)

    @torch.no_grad()
    def __call__(self, prompt, vocal=None, duration=None, generator=None, progress=True) -> ToyOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if vocal is not None:
            num_samples = torch.as_tensor(vocal).shape[-1]
        else:
            num_samples = round((self.default_duration if duration is None else duration) * self.sample_rate)
        audio = self.model(self.noise(len(prompts), num_samples, generator).to(self.model.linear.weight.device))
        return ToyOutput(audio[..., :num_samples].clamp(-1, 1).cpu(), self.sample_rate)

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        with atomic_directory(directory) as build:
            (build / PIPELINE_FILE).write_text(json.dumps({"family": FAMILY_PATH}))
            (build / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.config)))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(build / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device=None) -> ToyPipeline:
        from safetensors.torch import load_file

        directory = Path(directory)
        config = ToyConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        model = ToyModel(config.noise_dim, config.hop_length)
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return cls(model.to(device) if device is not None else model, config)


def build_toy(config: ToyConfig, seed: int = 0) -> ToyPipeline:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyPipeline(ToyModel(config.noise_dim, config.hop_length), config)


# --- data --------------------------------------------------------------------------------------------


def write_toy_data(directory: Path, num_clips: int = 6, num_samples: int = 2000, sample_rate: int = 8000) -> Path:
    """``clips.pt``: ``num_clips`` sine clips ``[N, T]`` and their captions."""
    t = torch.arange(num_samples) / sample_rate
    clips = torch.stack([0.5 * torch.sin(2 * math.pi * (200 + 50 * i) * t) for i in range(num_clips)])
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"clips": clips, "captions": [f"a tone at {200 + 50 * i} Hz" for i in range(num_clips)]}, directory / "clips.pt")
    return directory


class ToyClips(torch.utils.data.Dataset):
    """Two random crops per clip and epoch of ``crop_frames`` samples (rounded down to ``frame_multiple``); item
    randomness is a function of (seed, epoch, index). Items: ``audio [1, N]``, ``captions`` (str)."""

    def __init__(self, data_dir, crop_frames: int, frame_multiple: int, seed: int):
        data = torch.load(Path(data_dir) / "clips.pt")
        self.clips, self.captions = data["clips"], data["captions"]
        self.length, self.seed, self.epoch = crop_frames - crop_frames % frame_multiple, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = index % len(self.clips)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(0, self.clips.shape[-1] - self.length + 1))
        return {"audio": self.clips[clip, None, start : start + self.length], "captions": self.captions[clip]}


# --- the training task -------------------------------------------------------------------------------


@dataclass
class ToyTaskConfig(TaskConfig):
    resumable_keys: ClassVar[tuple[str, ...]] = ("sample_seconds",)

    loss: str = bounded("mse", choices=("mse", "l1"))
    sample_seconds: float = bounded(0.05, low=0.0, high=10.0, low_open=True)


class ToyTask(TrainingTask):
    config_class = ToyTaskConfig
    batch_keys = ("audio", "captions")
    data_hint = "a folder with clips.pt (tests/toy_family.py: write_toy_data)"

    def __init__(self, config, task_config: ToyTaskConfig, seed: int):
        super().__init__(config, task_config, seed)
        if config.model.init_from:
            self.pipeline = ToyPipeline.from_pretrained(config.model.init_from)
        else:
            self.pipeline = build_toy(ToyConfig.from_yaml(config.model.config, config.model.overrides), seed)

    @property
    def module(self) -> nn.Module:
        return self.pipeline.model

    @property
    def name(self) -> str:
        return "toy"

    @property
    def length_multiple(self) -> int:
        return self.pipeline.config.hop_length

    def prepare(self, batch: dict, device: torch.device) -> torch.Tensor:
        check_batch_keys(batch, self.batch_keys, "the toy task")
        return batch["audio"].to(device)

    def loss(self, model: nn.Module, prepared: torch.Tensor, generator: torch.Generator):
        crash_after = os.environ.get(CRASH_AFTER_STEP)
        if crash_after and (Path(self.config.output_dir) / "checkpoints" / f"checkpoint-{crash_after}").is_dir():
            os._exit(CRASH_STATUS)  # a hard crash once that checkpoint is written: no cleanup, like kill -9
        noise = self.pipeline.noise(prepared.shape[0], prepared.shape[-1], generator).to(prepared.device)
        error = model(noise) - prepared
        per_sample = error.pow(2) if self.settings.loss == "mse" else error.abs()
        return per_sample.mean(dim=(1, 2)), None

    @torch.no_grad()
    def validation_metrics(self, accelerator, model, loader, seed: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(seed)
        losses = [accelerator.gather_for_metrics(self.loss(model, self.prepare(batch, accelerator.device), generator)[0])
                  for batch in loader]
        return {"val/loss": torch.cat(losses).mean().item()}

    @torch.no_grad()
    def samples(self, accelerator, model, batch: dict, step: int) -> TaskSamples:
        pipeline = ToyPipeline(accelerator.unwrap_model(model), self.pipeline.config)
        captions = list(batch["captions"])
        generators = [torch.Generator().manual_seed(self.seed + i) for i in range(len(captions))]
        out = pipeline(captions, duration=self.settings.sample_seconds, generator=generators, progress=False)
        return TaskSamples(out.audios, out.sample_rate, captions)

    def reference(self, batch: dict) -> TaskSamples:
        return TaskSamples(batch["audio"], self.pipeline.sample_rate, list(batch["captions"]))

    def export(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        return self.pipeline.save_pretrained(out_dir)


def write_toy_configs(directory: Path, data_dir: Path) -> tuple[Path, Path]:
    """A toy model config and a small, quiet training config for it; returns (model config, training config)."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "toy.yaml"
    model.write_text(f"family: {FAMILY_PATH}\nsample_rate: 8000\nhop_length: 80\nnoise_dim: 4\nduration: 0.1\n")
    train = directory / "toy_train.yaml"
    train.write_text(f"""\
output_dir: {directory / 'run'}
seed: 0
max_steps: 4
mixed_precision: "no"
progress: false
model: {{config: toy.yaml}}
task: {{loss: mse, sample_seconds: 0.05}}
data: {{data_dir: {data_dir}, dataset: "toy_family:ToyClips", collate: null, crop_frames: 400, batch_size: 2, num_workers: 0}}
optimizer: {{learning_rate: 1.0e-2, warmup_steps: 1}}
ema: {{decay: 0.9}}
logging: {{log_with: none}}
validation: {{every: 2, num_items: 2, batch_size: 2}}
samples: {{every: 4, num_samples: 2}}
checkpoint: {{every: 2, keep_last: 2}}
""")
    return model, train
