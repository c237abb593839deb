"""Typed training configs read from YAML (``configs/train/*.yaml``) with ``key=value`` overrides.

A :class:`TrainConfig` says which model to train on which data, and how (optimiser, EMA, precision, logging,
validation and sample schedule, checkpoints): the generic sections the loop reads. What the model's family
trains and how (for the diffusion family: the stage, the objective, the validation times and the sample
guidance) is the ``task:`` section, whose schema is the family's training task's
(:attr:`~.task.TrainingTask.config_class`; the family comes from ``model.config`` or ``model.init_from``).
Values are checked against the field types and ranges when read, so a misspelt key or a value of the wrong
type fails before anything is built.

Configs of the layout before the ``task:`` section (``stage``, ``objective``, ``validation.times`` and the
sample guidance at the top level, e.g. the ``train_config.yaml`` of older runs) are read into ``task:``; as
overrides those keys are refused with their new name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from discodiff.configuration import apply_overrides, bounded, check_types, from_dict, read_yaml
from discodiff.errors import ConfigError
from discodiff.outputs import atomic_file

from .task import TaskConfig, task_class

MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb", "none")
# what a resumed run may change: how long it runs and what it reports and keeps, never what it computes (the task
# adds its own, see TaskConfig.resumable_keys). The data folders may move (another machine): every task checks on
# resume that the data are the same (the latent statistics and codec fingerprint, the codec task's track list).
RESUMABLE_KEYS = ("output_dir", "max_steps", "max_minutes", "progress", "gradient_checkpointing", "data.num_workers", "data.data_dir",
                  "data.validation_dir", "logging", "validation", "samples", "checkpoint")
# keys of the layout before the task section → where they live now
MOVED_TO_TASK = {"stage": "task.stage", "objective": "task.objective", "validation.times": "task.validation.times",
                 "samples.num_inference_steps": "task.samples.num_inference_steps",
                 "samples.text_guidance": "task.samples.text_guidance", "samples.vocal_guidance": "task.samples.vocal_guidance"}


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
    of :mod:`discodiff.training.data` with the keys the task reads (``frame_multiple`` is the task's
    ``length_multiple``). ``validation_dir``: a separately prepared held-out data dir; when
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
    """The task's validation metrics with the EMA weights over the first ``num_items`` items (or
    ``data.validation_dir``), every ``every`` steps (0: never)."""

    every: int = bounded(1000, low=0)
    num_items: int = bounded(16, low=1)
    batch_size: int = bounded(8, low=1)


@dataclass
class SamplesSection:
    """The task's audio samples (WAV + spectrogram PNG) from the EMA weights on the first ``num_samples`` validation
    items, every ``every`` steps (0: never)."""

    every: int = bounded(5000, low=0)
    num_samples: int = bounded(2, low=1)


@dataclass
class CheckpointSection:
    """Save the full training state every ``every`` steps (and at the end); keep the newest ``keep_last``."""

    every: int = bounded(1000, low=1)
    keep_last: int = bounded(3, low=1)


@dataclass
class TrainConfig:
    """One training run of the model ``model`` names: the generic sections, and ``task`` (the parsed ``task:``
    section, an instance of the model family's :attr:`~.task.TrainingTask.config_class`)."""

    output_dir: str = "runs/train"
    seed: int = bounded(0, low=0, high=2**32 - 1)
    max_steps: int = bounded(100_000, low=1)
    #: stop (with a checkpoint) at the first optimiser step after this many minutes of this session's training;
    #: ``--resume latest`` goes on from there. None: run until max_steps
    max_minutes: float | None = bounded(None, low=0.0, low_open=True)
    mixed_precision: str = bounded("bf16", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = False
    progress: bool = True
    model: ModelSection = field(default_factory=ModelSection)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    ema: EMASection = field(default_factory=EMASection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    samples: SamplesSection = field(default_factory=SamplesSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """Read ``path``, apply ``key.sub=value`` overrides (see :func:`~discodiff.configuration.apply_overrides`) and
        check every value; the ``task:`` section is read with the schema of the model family's training task."""
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config {path} not found; see configs/train/ for tiny.yaml, base.yaml, paper.yaml")
        data = read_yaml(path)
        _move_legacy_keys(data)
        _refuse_moved_overrides(overrides, where)
        apply_overrides(data, overrides)
        task_data = data.pop("task", None)
        config = from_dict(cls, data, where)
        check_types(config, where)
        model_config = Path(config.model.config)
        if not model_config.is_absolute():
            config.model.config = str((path.parent / model_config).resolve())
        task_config_class = task_class(config.model).config_class
        config.task = from_dict(task_config_class, {} if task_data is None else task_data, where, "task.")
        check_types(config.task, where, "task.")
        config.check(where)
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

    def resumable_keys(self) -> tuple[str, ...]:
        """What a resumed run may change: :data:`RESUMABLE_KEYS` and the task's ``task.<key>`` ones."""
        return RESUMABLE_KEYS + tuple(f"task.{key}" for key in type(self.task).resumable_keys)

    def differences(self, other: TrainConfig, ignore: Sequence[str] | None = None) -> list[str]:
        """``key: ours → theirs`` for every value that differs, keys spelt as overrides, sections in ``ignore`` (default:
        :meth:`resumable_keys`) skipped."""
        ours, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        skipped = self.resumable_keys() if ignore is None else tuple(ignore)
        return [f"{key}: {ours.get(key)!r} → {theirs.get(key)!r}" for key in sorted(ours.keys() | theirs.keys())
                if ours.get(key) != theirs.get(key) and not any(key == s or key.startswith(s + ".") for s in skipped)]

    def check(self, where: str = "config") -> None:
        """Raise a ConfigError naming the first wrong value (type, range or combination) and the valid choices."""
        check_types(self, where)
        if not self.output_dir.strip():
            raise ConfigError(f"{where}: output_dir is empty; give the run's folder, e.g. output_dir=runs/my-run")
        if len(self.optimizer.betas) != 2:
            raise ConfigError(f"{where}: optimizer.betas must be two numbers [beta1, beta2], got {self.optimizer.betas}")
        if self.samples.every and self.samples.num_samples > self.validation.num_items:
            raise ConfigError(f"{where}: samples.num_samples ({self.samples.num_samples}) are drawn from the validation items; "
                              f"raise validation.num_items (now {self.validation.num_items}) or lower samples.num_samples")
        self.task.check(where)


def _move_legacy_keys(data: dict) -> None:
    """Move the keys of the layout before the ``task:`` section (:data:`MOVED_TO_TASK`) into ``task`` (in place)."""
    if "task" in data:
        return
    task: dict = {}
    for old, new in MOVED_TO_TASK.items():
        *parents, leaf = old.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = new.split(".")[1:]
        target = task
        for part in new_parents:
            target = target.setdefault(part, {})
        target[new_leaf] = value
    if task:
        data["task"] = task


def _refuse_moved_overrides(overrides: Sequence[str], where: str) -> None:
    for override in overrides:
        key = override.partition("=")[0]
        for old, new in MOVED_TO_TASK.items():
            if key == old or key.startswith(old + "."):
                moved = new + key[len(old):]
                raise ConfigError(f"{where}: override '{override}': {key} is now {moved} (the task section); "
                                  f"pass {moved}={override.partition('=')[2] or '…'}")


def _flatten(node: dict, prefix: str = "") -> dict:
    """Nested dicts → ``{"section.key": value}`` (a ``dict`` field such as ``data.options`` is compared whole)."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and key != "options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
