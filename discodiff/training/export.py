"""Export a run's EMA weights as a model directory that :func:`discodiff.load_pipeline` and
``discodiff sample --model DIR`` load.

:func:`export_pipeline` is generic: it finds the checkpoint, reads the run's ``train_config.yaml``, checks the
destination, builds the run's training task (:mod:`.task`) from the saved config, copies the checkpoint's EMA
weights into the task's module and lets the task write its model directory (:meth:`~.task.TrainingTask.export`;
the diffusion task replaces only its stage in an existing model directory).

The destination is checked before any model is loaded: a new or empty folder, or a model directory
(``pipeline.json``) of the run's family; any other non-empty folder is refused. Families' ``save_pretrained``
write atomically (built under a temporary name, then swapped in), so a failed export leaves the earlier model as
it was.
"""

from __future__ import annotations

from pathlib import Path

import torch

from discodiff.errors import ConfigError, ModelDirectoryError, OutputError, TrainingError
from discodiff.outputs import check_output_dir
from discodiff.pipeline_utils import PIPELINE_FILE, directory_family

from .checkpoint import CHECKPOINTS_DIR, checkpoint_step, require_complete, resolve_checkpoint
from .run import CONFIG_FILE, saved_run_config
from .state import TrainingState
from .task import model_family, task_class


def export_pipeline(source: str | Path, out_dir: str | Path, init_from: str | None = None) -> Path:
    """Write the EMA weights of ``source`` (a run directory — its latest checkpoint — or a ``checkpoint-N``
    directory) into the model directory ``out_dir``; returns ``out_dir``. ``init_from``: where a copy of the run's
    ``model.init_from`` is, for a run that moved from the machine it started on."""
    checkpoint = require_complete(find_checkpoint(source), "export source")
    run_dir = checkpoint.parent.parent
    if not (run_dir / CONFIG_FILE).is_file():
        raise TrainingError(f"{checkpoint} is not inside a training run directory (no {run_dir / CONFIG_FILE}); "
                            "pass a run directory or one of its checkpoints/checkpoint-<step>")
    config = saved_run_config(run_dir, init_from)
    cls = task_class(config.model)
    for name in cls.run_files:
        if not (run_dir / name).is_file():
            raise TrainingError(f"{checkpoint} is not inside a complete training run directory (no {run_dir / name}); "
                                "pass a run directory or one of its checkpoints/checkpoint-<step>")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, what="export folder", marker=PIPELINE_FILE, reuse=True)
    if (out_dir / PIPELINE_FILE).is_file():
        check_same_family(out_dir, model_family(config.model).name)
    task = cls(config, config.task, config.seed)
    load_parameters(task.module, TrainingState.read_ema_parameters(checkpoint), checkpoint)
    return task.export(checkpoint, out_dir)


def check_same_family(out_dir: Path, family: str) -> None:
    """Refuse exporting into a model directory of another family than the run's."""
    try:
        theirs = directory_family(out_dir).name
    except (ConfigError, ModelDirectoryError) as err:
        raise OutputError(f"{out_dir} holds a model directory that cannot be read ({err}); export into a new directory") from err
    if theirs != family:
        raise OutputError(f"{out_dir} holds a model of the '{theirs}' family, this run trains the '{family}' family; "
                          "export into a new directory")


def find_checkpoint(source: str | Path) -> Path:
    """``source`` itself when it is a checkpoint, else the latest checkpoint of the run directory ``source``."""
    source = Path(source)
    if not source.is_dir():
        raise TrainingError(f"export source {source}: no such directory; pass a run directory (its output_dir) or one "
                            "of its checkpoints/checkpoint-<step>")
    if checkpoint_step(source) is not None:
        return source
    latest = resolve_checkpoint("latest", source / CHECKPOINTS_DIR)
    if latest is None:
        raise TrainingError(f"{source} has no checkpoints (expected {source / CHECKPOINTS_DIR}/checkpoint-<step>); "
                            "pass a run directory after its first checkpoint, or a checkpoint directory")
    return latest


def load_parameters(model: torch.nn.Module, tensors: list[torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model.parameters()`` in order, checking that the shapes match."""
    parameters = list(model.parameters())
    shapes = [tuple(p.shape) for p in parameters]
    if [tuple(t.shape) for t in tensors] != shapes:
        raise TrainingError(f"the EMA weights in {source} do not fit the run's model ({len(tensors)} tensors for "
                         f"{len(parameters)} parameters); was train_config.yaml or the model config changed after training?")
    with torch.no_grad():
        for parameter, tensor in zip(parameters, tensors):
            parameter.copy_(tensor)
