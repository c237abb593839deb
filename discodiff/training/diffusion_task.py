"""The diffusion family's training task: one stage (primary or secondary) of a :class:`~discodiff.pipeline.DiscoDiffPipeline`.

Its ``task:`` section (:class:`DiffusionTaskConfig`)::

    task:
      stage: primary                                  # or secondary
      objective: {loss: l1, text_dropout: 0.1, vocal_dropout: 0.1}
      validation: {times: [0.1, 0.3, 0.5, 0.7, 0.9]}  # the v-loss at these fixed t, with fixed noise
      samples: {num_inference_steps: 25, text_guidance: 3.0, vocal_guidance: 1.5}

A resumed run may change ``task.validation`` and ``task.samples``, never the stage or the objective.

The stage's U-Net and vocal encoder (:class:`~.stage.StageModel`) train on the data's latents normalised by the
data's statistics (``RUN/latent_stats.json``, exported with the weights), with the v-objective of
:class:`~.stage.StageObjective`. Before anything is built the data is checked (finished latent caches whose
windows hold the crop, statistics fitted per the model config's ``normalize_per``); once the model is built, a
data dir prepared with another codec geometry and a text cache made by another text encoder are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from discodiff.build import build_pipeline
from discodiff.codec import CodecNotFoundError
from discodiff.conditioning import ConditionerNotFoundError
from discodiff.config import MAX_GUIDANCE, DiscoDiffConfig
from discodiff.configuration import bounded
from discodiff.data.cache import LATENT_STATS_FILE
from discodiff.data.text_cache import check_text_cache
from discodiff.diffusion import LOSS_KINDS
from discodiff.errors import ConfigError, OutputError, TrainingError
from discodiff.latents import LatentStats, check_latent_stats
from discodiff.outputs import atomic_file
from discodiff.pipeline import PIPELINE_FILE, DiscoDiffPipeline

from .config import ModelSection, TrainConfig
from .data import (LATENT_CACHE_HINT, TrainingData, check_codec, check_data, check_latent_data, data_directories,
                   import_object, latent_stats_path, reads_cache)
from .stage import BATCH_KEYS, StageBatch, StageModel, StageObjective
from .task import TaskConfig, TaskSamples, TrainingTask
from .validation import decode, generate_samples, validation_loss

STAGES = ("primary", "secondary")


@dataclass
class ObjectiveSection:
    """The v-loss kind and the per-sample, independent condition dropout probabilities (for guidance)."""

    loss: str = bounded("l1", choices=LOSS_KINDS)
    text_dropout: float = bounded(0.1, low=0.0, high=1.0)
    vocal_dropout: float = bounded(0.1, low=0.0, high=1.0)


@dataclass
class DiffusionValidationSection:
    """The validation v-loss at these fixed diffusion ``times`` (with fixed noise, nothing dropped)."""

    times: list[float] = bounded(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], low=0.0, high=1.0, low_open=True, high_open=True)


@dataclass
class DiffusionSamplesSection:
    """How the stage's audio samples are generated (guidance as in the pipeline; 1 = unguided)."""

    num_inference_steps: int = bounded(25, low=1, high=1000)
    text_guidance: float = bounded(3.0, low=0.0, high=MAX_GUIDANCE)
    vocal_guidance: float = bounded(1.5, low=0.0, high=MAX_GUIDANCE)


@dataclass
class DiffusionTaskConfig(TaskConfig):
    """The ``task:`` section of a diffusion-family run (see the module docstring)."""

    resumable_keys: ClassVar[tuple[str, ...]] = ("validation", "samples")

    stage: str = bounded("primary", choices=STAGES)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    validation: DiffusionValidationSection = field(default_factory=DiffusionValidationSection)
    samples: DiffusionSamplesSection = field(default_factory=DiffusionSamplesSection)

    def check(self, where: str) -> None:
        if not self.validation.times:
            raise ConfigError(f"{where}: task.validation.times must list at least one t in (0, 1)")


class DiffusionStageTask(TrainingTask):
    """Trains ``task.stage`` of a :class:`DiscoDiffPipeline` (see the module docstring)."""

    config_class = DiffusionTaskConfig
    batch_keys = BATCH_KEYS
    run_files = (LATENT_STATS_FILE,)
    data_hint = LATENT_CACHE_HINT

    def __init__(self, config: TrainConfig, task_config: DiffusionTaskConfig, seed: int):
        super().__init__(config, task_config, seed)
        self.stage, self.device = task_config.stage, torch.device("cpu")
        self.pipeline = load_pipeline(config.model, seed)
        self.stage_model = StageModel.from_pipeline(self.pipeline, self.stage)
        objective = task_config.objective
        self.objective = StageObjective(self.pipeline, self.stage, objective.text_dropout, objective.vocal_dropout,
                                        objective.loss)

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        """The data dirs (:func:`~.data.check_data`, :func:`~.data.check_latent_data`) and, when the model comes from
        its config, the crop against the U-Net's downsampling and the statistics' ``per`` against ``normalize_per``."""
        frame_multiple, normalize_per = None, None
        if not config.model.init_from:
            model = model_config(config.model)
            frame_multiple = 2 ** (len(getattr(model, config.task.stage).block_channels) - 1)
            normalize_per = model.normalize_per
        check_data(config.data, cls.data_hint)
        stats = check_latent_data(config.data, frame_multiple)
        if normalize_per is not None:
            check_latent_stats(stats, normalize_per, stats.codebook_dim, latent_stats_path(config.data.data_dir))

    # --- the model and its data ----------------------------------------------------------------

    @property
    def module(self) -> StageModel:
        return self.stage_model

    @property
    def name(self) -> str:
        return self.stage

    @property
    def length_multiple(self) -> int:
        return self.stage_model.length_multiple

    def training_data(self, data, num_validation_items: int) -> TrainingData:
        """The datasets, after refusing data of another codec geometry, a text cache of another text encoder and
        statistics fitted per something else than the model's; the pipeline then normalises with the data's statistics."""
        check_data(data, self.data_hint)
        stats = check_latent_data(data, self.length_multiple)
        check_latent_stats(stats, self.pipeline.latent_stats.per, self.pipeline.codec.codebook_dim,
                           latent_stats_path(data.data_dir))
        text_cache = bool(data.options.get("text_cache")) and reads_cache(import_object(data.dataset, "data.dataset"))
        for key, directory in data_directories(data):
            check_codec(key, directory, self.pipeline.codec, self.pipeline.sources["codec"]["id"])
            if text_cache:
                check_text_cache(directory, self.pipeline.text_encoder)
        training = TrainingData.from_config(data, num_validation_items, self.length_multiple, self.seed)
        self.pipeline.latent_stats = stats
        return training

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.pipeline.codec.to(device)
        self.pipeline.text_encoder.to(device)

    # --- one step --------------------------------------------------------------------------------

    def prepare(self, batch: dict, device: torch.device) -> StageBatch:
        return self.objective.prepare(batch, device)

    def loss(self, model: nn.Module, prepared: StageBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.objective(model, prepared, generator)

    # --- reports -----------------------------------------------------------------------------------

    def validation_metrics(self, accelerator: Accelerator, model: nn.Module, loader: DataLoader, seed: int) -> dict[str, float]:
        return validation_loss(accelerator, model, self.objective, loader, self.settings.validation.times, seed)

    def samples(self, accelerator: Accelerator, model: nn.Module, batch: dict, step: int) -> TaskSamples:
        """This stage generated over the other stage's true latents of ``batch`` (guided as in the pipeline)."""
        settings = self.settings.samples
        prepared = self.prepare(batch, accelerator.device)
        audios = generate_samples(accelerator.unwrap_model(model), self.pipeline, prepared, settings.num_inference_steps,
                                  settings.text_guidance, settings.vocal_guidance, self.seed, autocast=accelerator.autocast)
        return TaskSamples(audios, self.pipeline.codec.sample_rate, list(batch["captions"]))

    def reference(self, batch: dict) -> TaskSamples:
        """The true latents of ``batch`` decoded."""
        prepared = self.prepare(batch, self.device)
        return TaskSamples(decode(self.pipeline, prepared.latents), self.pipeline.codec.sample_rate, list(batch["captions"]))

    # --- the run directory and export ------------------------------------------------------------

    def write_run_files(self, run_dir: Path) -> None:
        with atomic_file(Path(run_dir) / LATENT_STATS_FILE) as temporary:
            self.pipeline.latent_stats.save(temporary)

    def check_resume(self, run_dir: Path) -> None:
        """A resumed run must train on data with the latent statistics it started with (they are exported with it)."""
        path = Path(run_dir) / LATENT_STATS_FILE
        if not path.is_file():
            return
        saved, ours = LatentStats.load(path), self.pipeline.latent_stats
        same = (saved.per, saved.codebook_dim, saved.fitted) == (ours.per, ours.codebook_dim, ours.fitted) and \
            saved.mean.shape == ours.mean.shape and torch.equal(saved.mean.double(), ours.mean.double()) and \
            torch.equal(saved.std.double(), ours.std.double())
        if not same:
            raise TrainingError(f"--resume: the data's latent statistics differ from the run's ({path}): data.data_dir "
                                f"({self.config.data.data_dir}) was changed or re-prepared; resume on the data the run "
                                "started with, or train into a new output_dir")

    def export(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        """Only the trained stage (its U-Net and vocal encoder) is written with the EMA weights. Into a model directory
        it replaces that stage alone (so the primary and secondary runs can be exported one after the other into one
        model); a fresh directory gets the run's starting pipeline for the other stage. The run's latent statistics
        go with the weights."""
        out_dir = Path(out_dir)
        stats = LatentStats.load(Path(checkpoint_dir).parent.parent / LATENT_STATS_FILE)
        if (out_dir / PIPELINE_FILE).is_file():
            pipeline = DiscoDiffPipeline.from_pretrained(out_dir)
            check_compatible(pipeline, self.pipeline, stats, self.stage, out_dir)
            setattr(pipeline, self.stage, self.stage_model.unet)
            setattr(pipeline, f"{self.stage}_vocal_encoder", self.stage_model.vocal_encoder)
        else:
            pipeline = self.pipeline
        pipeline.latent_stats = stats
        return pipeline.save_pretrained(out_dir)


def load_pipeline(model: ModelSection, seed: int) -> DiscoDiffPipeline:
    """The pipeline a run starts from: ``model.init_from`` if set, else built from ``model.config`` with weights seeded by ``seed``.

    A codec or text encoder that is neither local nor cached nor reachable is a :class:`ConfigError` that says how to
    point the model config at a local copy.
    """
    if model.init_from:
        from .task import check_init_from

        check_init_from(model)
        try:
            return DiscoDiffPipeline.from_pretrained(model.init_from)
        except (CodecNotFoundError, ConditionerNotFoundError) as err:
            part = "codec" if isinstance(err, CodecNotFoundError) else "text encoder"
            raise ConfigError(f"model.init_from={model.init_from}: its {part} could not be loaded (not a local directory, "
                              f"not cached, hub unreachable); put the path of a local copy into "
                              f"{Path(model.init_from) / PIPELINE_FILE} (sources.{part.replace(' ', '_')}.id)") from err
    config = model_config(model)
    try:
        return build_pipeline(config, seed=seed)
    except (CodecNotFoundError, ConditionerNotFoundError) as err:
        key, value = ("codec.id", config.codec.id) if isinstance(err, CodecNotFoundError) else ("text_encoder.id", config.text_encoder.id)
        raise ConfigError(f"the model's {key} '{value}' (model config {model.config}) could not be loaded (not a local "
                          f"directory, not cached, hub unreachable); point it at a local copy with "
                          f"model.overrides=[{key}=path/to/dir], or edit {key} in {model.config}") from err


def model_config(model: ModelSection) -> DiscoDiffConfig:
    """The model config of ``model`` with its overrides (a :class:`ConfigError` naming the file when it is wrong)."""
    return DiscoDiffConfig.from_yaml(model.config, model.overrides)


def check_compatible(pipeline: DiscoDiffPipeline, run_pipeline: DiscoDiffPipeline, stats: LatentStats, stage: str,
                     out_dir: Path) -> None:
    """Raise an :class:`OutputError` when the trained stage cannot join the pipeline in ``out_dir``."""
    if pipeline.primary_channels != run_pipeline.primary_channels:
        raise OutputError(f"{out_dir} holds a pipeline whose primary generates {pipeline.primary_channels} channels, this "
                          f"run's {run_pipeline.primary_channels} (another primary_codebooks); export into a new directory")
    other = "secondary" if stage == "primary" and not pipeline.is_flat else "primary"
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
