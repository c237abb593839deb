"""The Accelerate trainer: one stage of a DiscoDiff pipeline, with EMA, LR schedule, checkpoints, resume, logging,
validation and export. Launch it with ``accelerate launch train/train.py`` (see ``train/README.md``)."""

from .checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import TrainingData
from .export import export_pipeline
from .stage import StageModel, StageObjective
from .state import TrainingState
from .trainer import Trainer, check_run

__all__ = [
    "StageModel",
    "StageObjective",
    "TrainConfig",
    "Trainer",
    "TrainingData",
    "TrainingState",
    "check_run",
    "export_pipeline",
    "list_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
]
