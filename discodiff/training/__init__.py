"""Training: a family-agnostic Accelerate loop and the training tasks of model families.

Generic (every family): :class:`Trainer` and :func:`check_run` (``trainer``), :class:`TrainConfig` (``config``),
the task protocol :class:`TrainingTask` / :class:`TaskConfig` (``task``), datasets and the batch contract
(``data``), checkpoints, run directories, training state, logging, and :func:`export_pipeline` (``export``).
Launch it with ``accelerate launch train/train.py`` (see ``train/README.md``).

The diffusion family's task: :class:`~.diffusion_task.DiffusionStageTask` (``diffusion_task``), with its stage
model and objective (``stage``) and its validation loss and samples (``validation``).
"""

from .checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import TrainingData
from .export import export_pipeline
from .stage import StageModel, StageObjective
from .state import TrainingState
from .task import TaskConfig, TaskSamples, TrainingTask, task_class
from .trainer import Trainer, check_run

__all__ = [
    "StageModel",
    "StageObjective",
    "TaskConfig",
    "TaskSamples",
    "TrainConfig",
    "Trainer",
    "TrainingData",
    "TrainingState",
    "TrainingTask",
    "check_run",
    "export_pipeline",
    "list_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "task_class",
]
