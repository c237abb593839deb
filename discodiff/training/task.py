"""The training task: what a model family trains, as seen by the family-agnostic loop (:class:`~.trainer.Trainer`).

The loop owns everything generic — Accelerate (processes, mixed precision, accumulation, clipping), AdamW with
warmup + cosine, the EMA, checkpoints and ``--resume``, the run directory, metrics and trackers, when to
validate and sample, and the export dispatch. A family's :class:`TrainingTask` owns what it trains: the
trainable module, its data, its loss, its validation metrics and audio samples, and how its weights become a
model directory. A family names its task class in its :class:`~discodiff.pipeline_utils.Family` (``task=``,
a ``module:attribute`` path); the loop finds it from the model the run trains (:func:`task_class`), so a new
family adds a task without touching the loop, the data loader or the launch scripts.

The task's own settings are the ``task:`` section of the training config, a dataclass deriving from
:class:`TaskConfig` (its :attr:`TrainingTask.config_class`), read with the same typed, range-checked loader as
the rest of the config (``task.stage=secondary`` overrides; unknown task keys are errors naming them).

Call order in one run (every process)::

    TaskClass.check(config)                  before anything is built (also by check_run)
    task = TaskClass(config, config.task, seed)   builds the model (global RNG seeded just before)
    data = task.training_data(config.data, config.validation.num_items)
    task.module.enable_gradient_checkpointing()   only with gradient_checkpointing=true
    task.to(device)                          frozen parts (the trainable module is placed by accelerator.prepare)
    task.check_resume(run_dir) / task.write_run_files(run_dir)
    loop: task.loss(model, task.prepare(batch, device), generator[, adversary=…])   (the keyword when task.adversary)
    task.validation_metrics(...), task.samples(...), task.reference(...)   with the EMA weights
    export: TaskClass(saved config, …); EMA weights copied into task.module; task.export(checkpoint, out_dir)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from discodiff.errors import ConfigError
from discodiff.pipeline_utils import PIPELINE_FILE, Family, config_family, directory_family

if TYPE_CHECKING:
    from .adversary import AdversarySpec
    from .config import DataSection, ModelSection, TrainConfig
    from .data import TrainingData


@dataclass
class TaskConfig:
    """Base of every task's ``task:`` section. ``resumable_keys`` (relative to ``task.``) may change when a run is
    resumed (what it reports, never what it computes); :meth:`check` makes the checks a field range cannot."""

    resumable_keys: ClassVar[tuple[str, ...]] = ()

    def check(self, where: str) -> None:
        """Raise a :class:`~discodiff.errors.ConfigError` naming ``task.<key>`` for values wrong in combination."""


@dataclass
class TaskSamples:
    """Audio a task made for the run's ``samples/``: ``audios [B, 1, T]`` at ``sample_rate``, one caption per item."""

    audios: torch.Tensor
    sample_rate: int
    captions: list[str]


class TrainingTask(ABC):
    """What one family trains, for the generic loop. Subclasses set :attr:`config_class` and implement
    :attr:`module`, :meth:`prepare`, :meth:`loss` and :meth:`export`; the other hooks have neutral defaults.

    Built as ``TaskClass(config, task_config, seed)`` from the whole :class:`~.config.TrainConfig`, its parsed
    ``task:`` section (an instance of :attr:`config_class`, kept as ``self.settings``) and the run seed (subclasses
    call ``super().__init__`` and then build their model). Building writes nothing and must not
    draw from the global RNGs except through seeded, forked generators (the loop seeds them just before, and U-Net
    dropout and data-loader workers rely on that state).
    """

    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    #: the batch keys :meth:`prepare` reads (see :mod:`discodiff.training.data`); other keys may be present
    batch_keys: ClassVar[tuple[str, ...]] = ()
    #: files the task writes into the run directory (:meth:`write_run_files`); ``--overwrite`` removes them
    run_files: ClassVar[tuple[str, ...]] = ()
    #: what ``data.data_dir`` should be, for error messages
    data_hint: ClassVar[str] = "the folder that data.dataset reads"

    def __init__(self, config: TrainConfig, task_config: TaskConfig, seed: int):
        self.config, self.settings, self.seed = config, task_config, seed

    # --- before anything is built --------------------------------------------------------------

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        """Every check of the run's model and data that needs no model built; one-line errors, writes nothing.
        Default: the generic data checks (:func:`~.data.check_data`)."""
        from .data import check_data

        check_data(config.data, cls.data_hint)

    # --- the model and its data ----------------------------------------------------------------

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The trainable parameters as one module, for ``accelerator.prepare``, the optimiser, the EMA and the
        checkpoints (its ``parameters()`` order is the EMA's). ``enable_gradient_checkpointing()`` if it supports it."""

    @property
    def name(self) -> str:
        """A short name for progress bars (e.g. the stage)."""
        return type(self).__name__

    @property
    def length_multiple(self) -> int:
        """Sequence lengths the module takes are multiples of this (datasets get it as ``frame_multiple``)."""
        return 1

    def training_data(self, data: DataSection, num_validation_items: int) -> TrainingData:
        """Train and validation datasets from the generic ``data`` section (default:
        :meth:`~.data.TrainingData.from_config` with :attr:`length_multiple`); a task also checks here what needs
        its model (e.g. the data's codec or text encoder against the model's)."""
        from .data import TrainingData

        return TrainingData.from_config(data, num_validation_items, self.length_multiple, self.seed)

    def to(self, device: torch.device) -> None:
        """Move the frozen parts the task uses (encoders, codecs) to ``device``."""

    @property
    def adversary(self) -> AdversarySpec | None:
        """A module the loop trains against :attr:`module` with an optimiser of its own (a GAN's discriminator), or
        None (the default). With one, :meth:`loss` takes it as the keyword ``adversary`` (an
        :class:`~.adversary.Adversary`) and steps it; see :mod:`.adversary`. Built once, in ``__init__``."""
        return None

    # --- one step --------------------------------------------------------------------------------

    @abstractmethod
    def prepare(self, batch: dict, device: torch.device) -> Any:
        """A collated batch (:mod:`discodiff.training.data`; at least :attr:`batch_keys`) → what :meth:`loss` takes,
        on ``device``: encodes frozen conditions, normalises, checks shapes (a :class:`~discodiff.errors.DataError`)."""

    @abstractmethod
    def loss(self, model: nn.Module, prepared: Any, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(loss [B], t [B] or None)``: per-sample losses of ``prepared`` through ``model`` (the prepared
        :attr:`module`), drawing every random number from ``generator`` (checkpointed per process). With ``t`` (a
        diffusion time in [0, 1] per sample) the loop also logs the loss by t bucket. A task with an
        :attr:`adversary` also takes ``adversary=`` and updates it here (once per call)."""

    # --- reports (with the EMA weights; every process runs them) ---------------------------------

    def validation_metrics(self, accelerator: Accelerator, model: nn.Module, loader: DataLoader, seed: int) -> dict[str, float]:
        """``{"val/<name>": value}`` over every validation batch (gather with ``accelerator.gather_for_metrics``);
        draw randomness from fresh generators seeded by ``seed`` so every evaluation sees the same noise."""
        return {}

    def samples(self, accelerator: Accelerator, model: nn.Module, batch: dict, step: int) -> TaskSamples | None:
        """Audio generated for the collated ``batch`` (the first ``samples.num_samples`` validation items), or None
        when the task makes no audio. ``accelerator.unwrap_model(model)`` reaches the module's parts."""
        return None

    def reference(self, batch: dict) -> TaskSamples | None:
        """The audio ``batch`` itself stands for (written once to ``samples/reference``), or None."""
        return None

    # --- the run directory and export ------------------------------------------------------------

    def write_run_files(self, run_dir: Path) -> None:
        """Write :attr:`run_files` (main process, atomically), e.g. what export needs besides the weights."""

    def check_resume(self, run_dir: Path) -> None:
        """Refuse resuming when the data no longer matches what the run's files record (a TrainingError)."""

    @abstractmethod
    def export(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        """Write a model directory (``pipeline.json`` naming the family, loadable by :func:`discodiff.load_pipeline`)
        into ``out_dir`` — new, empty, or a model directory of this family — with :attr:`module` already holding
        the EMA weights of ``checkpoint_dir`` (whose run directory is ``checkpoint_dir.parent.parent``)."""


def model_family(model: ModelSection) -> Family:
    """The family of the model a run trains: the model directory ``model.init_from``, else the model config."""
    if model.init_from:
        check_init_from(model)
        return directory_family(model.init_from)
    return config_family(model.config)


def task_class(model: ModelSection) -> type[TrainingTask]:
    """The training task class of the model a run trains (its family's ``task``)."""
    family = model_family(model)
    cls = family.task_class()
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(cls, type) and isinstance(config_class, type) and issubclass(config_class, TaskConfig)):
        raise ConfigError(f"family '{family.name}': its task {family.task} is not a discodiff.training.TrainingTask")
    return cls


def check_init_from(model: ModelSection) -> None:
    """``model.init_from`` is a model directory (holds ``pipeline.json``)."""
    if not (Path(model.init_from) / PIPELINE_FILE).is_file():
        raise ConfigError(f"model.init_from={model.init_from} is not a discodiff model directory (no {PIPELINE_FILE}); "
                          "pass an exported model (train/export.py) or model.init_from=null to start from random weights")
