"""Export a run's EMA weights as a pipeline directory that ``DiscoDiffPipeline.from_pretrained`` and
``discodiff sample --model DIR`` load.

Only the trained stage (its U-Net and vocal encoder) is written with EMA weights. Exporting into a directory
that already holds a pipeline replaces that stage alone, so the primary and secondary runs can be exported
one after the other into one model; a fresh directory gets the run's starting pipeline for the other stage.
The run's latent statistics go with the weights.

The destination is checked before any model is loaded: a new or empty folder, or a model directory
(``pipeline.json``); any other non-empty folder is refused. :meth:`DiscoDiffPipeline.save_pretrained` writes
it atomically (built under a temporary name, then swapped in; other files of an earlier model directory are
carried over), so a failed export leaves the earlier model as it was.
"""

from __future__ import annotations

from pathlib import Path

import torch

from discodiff.data.cache import LATENT_STATS_FILE
from discodiff.errors import OutputError, TrainingError
from discodiff.latents import LatentStats
from discodiff.outputs import check_output_dir
from discodiff.pipeline import PIPELINE_FILE, DiscoDiffPipeline

from .checkpoint import CHECKPOINTS_DIR, checkpoint_step, require_complete, resolve_checkpoint
from .config import TrainConfig
from .run import CONFIG_FILE
from .stage import StageModel, load_pipeline
from .state import TrainingState


def export_pipeline(source: str | Path, out_dir: str | Path) -> Path:
    """Write the EMA weights of ``source`` (a run directory — its latest checkpoint — or a ``checkpoint-N``
    directory) into the pipeline directory ``out_dir``; returns ``out_dir``."""
    checkpoint = require_complete(find_checkpoint(source), "export source")
    run_dir = checkpoint.parent.parent
    for name in (CONFIG_FILE, LATENT_STATS_FILE):
        if not (run_dir / name).is_file():
            raise TrainingError(f"{checkpoint} is not inside a training run directory (no {run_dir / name}); "
                                "pass a run directory or one of its checkpoints/checkpoint-<step>")
    out_dir = Path(out_dir)
    updating = check_output_dir(out_dir, what="export folder", marker=PIPELINE_FILE, reuse=True)
    config = TrainConfig.from_yaml(run_dir / CONFIG_FILE)
    stats = LatentStats.load(run_dir / LATENT_STATS_FILE)
    run_pipeline = load_pipeline(config.model, config.seed)
    trained = StageModel.from_pipeline(run_pipeline, config.stage)
    load_parameters(trained, TrainingState.read_ema_parameters(checkpoint), checkpoint)

    if updating:
        pipeline = DiscoDiffPipeline.from_pretrained(out_dir)
        check_compatible(pipeline, run_pipeline, stats, config.stage, out_dir)
        setattr(pipeline, config.stage, trained.unet)
        setattr(pipeline, f"{config.stage}_vocal_encoder", trained.vocal_encoder)
    else:
        pipeline = run_pipeline
    pipeline.latent_stats = stats
    return pipeline.save_pretrained(out_dir)


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


def check_compatible(pipeline: DiscoDiffPipeline, run_pipeline: DiscoDiffPipeline, stats: LatentStats, stage: str,
                     out_dir: Path) -> None:
    """Raise an :class:`OutputError` when the trained stage cannot join the pipeline in ``out_dir``."""
    other = "secondary" if stage == "primary" else "primary"
    ours, theirs = getattr(run_pipeline, stage).config, getattr(pipeline, other).config
    if (ours.context_dims, ours.pooled_dim) != (theirs.context_dims, theirs.pooled_dim) or \
            run_pipeline.codec.latent_channels != pipeline.codec.latent_channels:
        raise OutputError(f"{out_dir} holds a pipeline with another codec or text encoder than this run; export into a new directory")
    if pipeline.has_vocal_encoder != run_pipeline.has_vocal_encoder:
        raise OutputError(f"{out_dir} and this run disagree on vocal_encoder.enabled; export into a new directory")
    if pipeline.latent_stats.fitted and not (torch.equal(pipeline.latent_stats.mean, stats.mean)
                                             and torch.equal(pipeline.latent_stats.std, stats.std)):
        raise OutputError(f"{out_dir} was exported with other latent statistics than this run's data; train both stages "
                         "on the same prepared data, or export into a new directory")
