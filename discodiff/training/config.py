"""Typed training configs read from YAML (``configs/train/*.yaml``) with ``key=value`` overrides.

A :class:`TrainConfig` says which stage to train, on which model and data, and how (optimiser, EMA,
precision, logging, validation, samples, checkpoints). Values are checked against the field types
when read, so a misspelt key or a value of the wrong type fails before anything is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from discodiff.configuration import bounded, check_types, load_config
from discodiff.diffusion import LOSS_KINDS
from discodiff.errors import ConfigError
from discodiff.outputs import atomic_file

STAGES = ("primary", "secondary")
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb", "none")
# what a resumed run may change: how long it runs and what it reports and keeps, never what it computes
RESUMABLE_KEYS = ("output_dir", "max_steps", "progress", "gradient_checkpointing", "data.num_workers", "logging",
                  "validation", "samples", "checkpoint")


@dataclass
class ModelSection:
    """The pipeline being trained.

    ``config``: a model config (``configs/tiny.yaml`` …); a relative path is read relative to the
    training config file. ``overrides``: ``key=value`` overrides of that config. ``init_from``: a
    pipeline directory to start from instead of random weights (e.g. the exported primary when
    training the secondary).
    """

    config: str = "../tiny.yaml"
    overrides: list[str] = field(default_factory=list)
    init_from: str | None = None


@dataclass
class DataSection:
    """The prepared latent data.

    ``dataset`` / ``collate`` are ``module:attribute`` import paths; the dataset is called as
    ``dataset(data_dir, crop_frames=…, frame_multiple=…, seed=…, **options)`` (e.g. ``options:
    {text_cache: true, noisy_vocal_std: 0.1}`` for ``LatentCropDataset``) and must yield the batch contract
    of :mod:`discodiff.training.data`. ``validation_dir``: a separately prepared held-out data dir; when
    None, the first ``validation.num_items`` items of ``data_dir`` are held out of training.
    ``batch_size`` is per process.
    """

    data_dir: str | None = None
    validation_dir: str | None = None
    dataset: str = "discodiff.data.dataset:LatentCropDataset"
    collate: str | None = "discodiff.data.dataset:collate_latent_batch"
    options: dict = field(default_factory=dict)
    crop_frames: int = bounded(2048, low=1)
    batch_size: int = bounded(8, low=1)
    num_workers: int = bounded(2, low=0)


@dataclass
class OptimizerSection:
    """AdamW with linear warmup then cosine decay to 0 at ``max_steps``; gradients clipped to ``max_grad_norm``."""

    learning_rate: float = bounded(1e-4, low=0.0, high=1.0, low_open=True)
    betas: list[float] = bounded(default_factory=lambda: [0.9, 0.999], low=0.0, high=1.0, high_open=True)
    weight_decay: float = bounded(0.01, low=0.0)
    eps: float = bounded(1e-8, low=0.0, low_open=True)
    warmup_steps: int = bounded(1000, low=0)
    max_grad_norm: float = bounded(1.0, low=0.0, low_open=True)
    gradient_accumulation_steps: int = bounded(1, low=1)


@dataclass
class ObjectiveSection:
    """The v-loss kind and the per-sample, independent condition dropout probabilities (for guidance)."""

    loss: str = bounded("l1", choices=LOSS_KINDS)
    text_dropout: float = bounded(0.1, low=0.0, high=1.0)
    vocal_dropout: float = bounded(0.1, low=0.0, high=1.0)


@dataclass
class EMASection:
    """``diffusers.training_utils.EMAModel`` settings (warmup: decay ``1 − (1 + step/inv_gamma)^−power``, capped at ``decay``)."""

    decay: float = bounded(0.9999, low=0.0, high=1.0)
    use_warmup: bool = True
    inv_gamma: float = bounded(1.0, low=0.0, low_open=True)
    power: float = bounded(0.6666666, low=0.0, low_open=True)
    update_after_step: int = bounded(0, low=0)


@dataclass
class LoggingSection:
    """``log_with``: tensorboard, wandb or none; ``loss_buckets``: equal-width t buckets for the loss-by-t curves."""

    log_with: str = bounded("tensorboard", choices=TRACKERS)
    project_name: str = "discodiff"
    loss_buckets: int = bounded(4, low=1, high=100)


@dataclass
class ValidationSection:
    """Validation loss at fixed ``times`` with fixed noise, with the EMA weights, every ``every`` steps (0: never)."""

    every: int = bounded(1000, low=0)
    num_items: int = bounded(16, low=1)
    batch_size: int = bounded(8, low=1)
    times: list[float] = bounded(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], low=0.0, high=1.0, low_open=True, high_open=True)


@dataclass
class SamplesSection:
    """Audio samples (WAV + spectrogram PNG) from the EMA weights on the first validation items, every ``every`` steps (0: never)."""

    every: int = bounded(5000, low=0)
    num_samples: int = bounded(2, low=1)
    num_inference_steps: int = bounded(25, low=1, high=1000)
    text_guidance: float = bounded(3.0, low=0.0, high=100.0)
    vocal_guidance: float = bounded(1.5, low=0.0, high=100.0)


@dataclass
class CheckpointSection:
    """Save the full training state every ``every`` steps (and at the end); keep the newest ``keep_last``."""

    every: int = bounded(1000, low=1)
    keep_last: int = bounded(3, low=1)


@dataclass
class TrainConfig:
    """One training run of one stage (``primary`` or ``secondary``) of a :class:`~discodiff.pipeline.DiscoDiffPipeline`."""

    stage: str = bounded("primary", choices=STAGES)
    output_dir: str = "runs/primary"
    seed: int = bounded(0, low=0, high=2**32 - 1)
    max_steps: int = bounded(100_000, low=1)
    mixed_precision: str = bounded("bf16", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = False
    progress: bool = True
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    ema: EMASection = field(default_factory=EMASection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    samples: SamplesSection = field(default_factory=SamplesSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """Read ``path``, apply ``key.sub=value`` overrides (see :func:`apply_overrides`) and check every value."""
        path = Path(path)
        config = load_config(cls, path, overrides, hint="see configs/train/ for tiny.yaml, base.yaml, paper.yaml")
        model_config = Path(config.model.config)
        if not model_config.is_absolute():
            config.model.config = str((path.parent / model_config).resolve())
        config.check(str(path))
        return config

    def save(self, path: str | Path) -> Path:
        """Write as YAML, atomically (a crash leaves the earlier file); it reads back equal (the model config path is
        stored absolute)."""
        path = Path(path)
        with atomic_file(path) as temporary:
            temporary.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def differences(self, other: TrainConfig, ignore: Sequence[str] = RESUMABLE_KEYS) -> list[str]:
        """``key: ours → theirs`` for every value that differs, keys spelt as overrides, sections in ``ignore`` skipped."""
        ours, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        skipped = tuple(ignore)
        return [f"{key}: {ours.get(key)!r} → {theirs.get(key)!r}" for key in sorted(ours.keys() | theirs.keys())
                if ours.get(key) != theirs.get(key) and not any(key == s or key.startswith(s + ".") for s in skipped)]

    def check(self, where: str = "config") -> None:
        """Raise a ConfigError naming the first wrong value (type, range or combination) and the valid choices."""
        check_types(self, where)
        if not self.output_dir.strip():
            raise ConfigError(f"{where}: output_dir is empty; give the run's folder, e.g. output_dir=runs/{self.stage}")
        if len(self.optimizer.betas) != 2:
            raise ConfigError(f"{where}: optimizer.betas must be two numbers [beta1, beta2], got {self.optimizer.betas}")
        if not self.validation.times:
            raise ConfigError(f"{where}: validation.times must list at least one t in (0, 1)")
        if self.samples.every and self.samples.num_samples > self.validation.num_items:
            raise ConfigError(f"{where}: samples.num_samples ({self.samples.num_samples}) are drawn from the validation items; "
                              f"raise validation.num_items (now {self.validation.num_items}) or lower samples.num_samples")


def _flatten(node: dict, prefix: str = "") -> dict:
    """Nested dicts → ``{"section.key": value}`` (a ``dict`` field such as ``data.options`` is compared whole)."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and key != "options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
