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

from discodiff.config import apply_overrides, check_types, from_dict, read_yaml
from discodiff.diffusion import LOSS_KINDS

STAGES = ("primary", "secondary")
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb", "none")


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
    crop_frames: int = 2048
    batch_size: int = 8
    num_workers: int = 2


@dataclass
class OptimizerSection:
    """AdamW with linear warmup then cosine decay to 0 at ``max_steps``; gradients clipped to ``max_grad_norm``."""

    learning_rate: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 1000
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1


@dataclass
class ObjectiveSection:
    """The v-loss kind and the per-sample, independent condition dropout probabilities (for guidance)."""

    loss: str = "l1"
    text_dropout: float = 0.1
    vocal_dropout: float = 0.1


@dataclass
class EMASection:
    """``diffusers.training_utils.EMAModel`` settings (warmup: decay ``1 − (1 + step/inv_gamma)^−power``, capped at ``decay``)."""

    decay: float = 0.9999
    use_warmup: bool = True
    inv_gamma: float = 1.0
    power: float = 0.6666666
    update_after_step: int = 0


@dataclass
class LoggingSection:
    """``log_with``: tensorboard, wandb or none; ``loss_buckets``: equal-width t buckets for the loss-by-t curves."""

    log_with: str = "tensorboard"
    project_name: str = "discodiff"
    loss_buckets: int = 4


@dataclass
class ValidationSection:
    """Validation loss at fixed ``times`` with fixed noise, with the EMA weights, every ``every`` steps (0: never)."""

    every: int = 1000
    num_items: int = 16
    batch_size: int = 8
    times: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])


@dataclass
class SamplesSection:
    """Audio samples (WAV + spectrogram PNG) from the EMA weights on the first validation items, every ``every`` steps (0: never)."""

    every: int = 5000
    num_samples: int = 2
    num_inference_steps: int = 25
    text_guidance: float = 3.0
    vocal_guidance: float = 1.5


@dataclass
class CheckpointSection:
    """Save the full training state every ``every`` steps (and at the end); keep the newest ``keep_last``."""

    every: int = 1000
    keep_last: int = 3


@dataclass
class TrainConfig:
    """One training run of one stage (``primary`` or ``secondary``) of a :class:`~discodiff.pipeline.DiscoDiffPipeline`."""

    stage: str = "primary"
    output_dir: str = "runs/primary"
    seed: int = 0
    max_steps: int = 100_000
    mixed_precision: str = "bf16"
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
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} not found; see configs/train/ for tiny.yaml, base.yaml, paper.yaml")
        data = read_yaml(path)
        apply_overrides(data, overrides)
        config = from_dict(cls, data, str(path))
        model_config = Path(config.model.config)
        if not model_config.is_absolute():
            config.model.config = str((path.parent / model_config).resolve())
        config.check(str(path))
        return config

    def save(self, path: str | Path) -> Path:
        """Write as YAML; it reads back equal (the model config path is stored absolute)."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self, where: str = "config") -> None:
        """Raise a ValueError naming the first wrong value (type or range) and the valid choices."""
        check_types(self, where)
        choices = {"stage": (self.stage, STAGES), "mixed_precision": (self.mixed_precision, MIXED_PRECISION),
                   "logging.log_with": (self.logging.log_with, TRACKERS), "objective.loss": (self.objective.loss, LOSS_KINDS)}
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ValueError(f"{where}: {key} must be one of {', '.join(valid)}, got '{value}'")
        at_least_one = {"max_steps": self.max_steps, "data.batch_size": self.data.batch_size,
                        "data.crop_frames": self.data.crop_frames, "checkpoint.every": self.checkpoint.every,
                        "checkpoint.keep_last": self.checkpoint.keep_last,
                        "optimizer.gradient_accumulation_steps": self.optimizer.gradient_accumulation_steps,
                        "logging.loss_buckets": self.logging.loss_buckets, "validation.batch_size": self.validation.batch_size,
                        "samples.num_inference_steps": self.samples.num_inference_steps}
        for key, value in at_least_one.items():
            if value < 1:
                raise ValueError(f"{where}: {key} must be at least 1, got {value}")
        for key, p in (("objective.text_dropout", self.objective.text_dropout), ("objective.vocal_dropout", self.objective.vocal_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{where}: {key} is a probability in [0, 1], got {p}")
        if not all(0.0 < t < 1.0 for t in self.validation.times):
            raise ValueError(f"{where}: validation.times must lie in (0, 1), got {self.validation.times}")
        if self.samples.every and self.samples.num_samples > self.validation.num_items:
            raise ValueError(f"{where}: samples.num_samples ({self.samples.num_samples}) are drawn from the validation items; "
                             f"raise validation.num_items (now {self.validation.num_items}) or lower samples.num_samples")
