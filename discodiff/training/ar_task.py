"""The AR family's training task: one stage (semantic, coarse or fine) of an :class:`~discodiff.ar.pipeline.ARPipeline`.

Its ``task:`` section (:class:`ARTaskConfig`)::

    task:
      stage: coarse                                   # semantic | coarse | fine
      text_dropout: 0.1                               # per-sample condition dropout, independent (for guidance)
      vocal_dropout: 0.1
      tokenizer: {max_frames: 200000, seed: 0}        # k-means fit of an unfitted semantic tokenizer
      samples: {temperature: 1.0, top_k: 0, text_guidance: 3.0, vocal_guidance: 1.5}

It trains on the same latent cache as the diffusion family (``discodiff prepare``): codes are the cached latents
snapped to the model's codec, semantic tokens the nearest centroids of their first codebooks
(:meth:`ARPipeline.semantic_tokens`; the vocal latents carry the dataset's SingSong noise). Teacher forcing,
cross-entropy averaged over codebooks (:meth:`~discodiff.ar.stages.StageSpec.loss`).

**The semantic tokenizer is data statistics**, like the diffusion family's latent statistics: a model built from
its config has an unfitted one, and the task fits it (``sklearn`` ``MiniBatchKMeans``, seeded) on up to
``tokenizer.max_frames`` frames of the training split's vocal and accompaniment latents before training; it is
written to ``RUN/semantic_tokenizer.safetensors`` (a resumed run must find the same) and exported with the stage.
Every stage run on the same data and seed fits the same centroids; export refuses to join a stage to a model
directory whose tokenizer differs. A model from ``model.init_from`` keeps its fitted tokenizer.

**SSL semantic tokens** (``tokenizer.features: hubert`` or ``mert``) are features of audio, which the cache does not
hold: ``discodiff tokenize`` computes them from the stems with their tokenizer, and the run reads them with
``data.options.semantic_tokens=true`` (the batch's ``semantic``, ``vocal_semantic``, ``semantic_mask``); the
cache's tokenizer must be of the model's extractor (same weights) and becomes the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from discodiff.ar.build import build_pipeline
from discodiff.ar.config import STAGES, ARConfig
from discodiff.ar.pipeline import TOKENIZER_FILE, ARPipeline
from discodiff.ar.sampling import SamplingSettings, sample_stage
from discodiff.conditioning.semantic import SemanticTokenizer
from discodiff.ar.stages import StageTokens, stage_conditions, stage_target
from discodiff.call_inputs import MAX_GUIDANCE
from discodiff.conditioning import TextCondition
from discodiff.configuration import bounded
from discodiff.data.cache import CacheLayout
from discodiff.errors import ConfigError, DataError, OutputError, TrainingError
from discodiff.guidance import condition_dropout
from discodiff.outputs import atomic_file
from discodiff.pipeline_utils import PIPELINE_FILE

from .config import TrainConfig
from .data import LATENT_CACHE_HINT, TrainingData, check_batch_keys, check_codec, check_data, check_latent_data, data_directories
from .state import process_seed
from .task import TaskConfig, TaskSamples, TrainingTask, check_init_from

BATCH_KEYS = ("latents", "vocal_latents", "frame_mask", "captions")
SEMANTIC_KEYS = ("semantic", "vocal_semantic", "semantic_mask")  # cached SSL tokens (discodiff tokenize)


@dataclass
class TokenizerFitSection:
    """How an unfitted semantic tokenizer is fitted: at most ``max_frames`` frames (drawn evenly), k-means ``seed``."""

    max_frames: int = bounded(200_000, low=1)
    seed: int = bounded(0, low=0)


@dataclass
class ARSamplesSection:
    """How the stage's audio samples are generated (over the other stages' true tokens)."""

    temperature: float = bounded(1.0, low=0.0, high=10.0, low_open=True)
    top_k: int = bounded(0, low=0)
    text_guidance: float = bounded(3.0, low=0.0, high=MAX_GUIDANCE)
    vocal_guidance: float = bounded(1.5, low=0.0, high=MAX_GUIDANCE)


@dataclass
class ARTaskConfig(TaskConfig):
    """The ``task:`` section of an AR-family run (see the module docstring)."""

    resumable_keys: ClassVar[tuple[str, ...]] = ("samples",)

    stage: str = bounded("semantic", choices=STAGES)
    text_dropout: float = bounded(0.1, low=0.0, high=1.0)
    vocal_dropout: float = bounded(0.1, low=0.0, high=1.0)
    tokenizer: TokenizerFitSection = field(default_factory=TokenizerFitSection)
    samples: ARSamplesSection = field(default_factory=ARSamplesSection)


@dataclass
class ARBatch:
    """A batch ready for one stage: its :class:`StageTokens` and the encoded text."""

    tokens: StageTokens
    text: TextCondition

    @property
    def batch_size(self) -> int:
        return self.tokens.frame_mask.shape[0]


class ARStageTask(TrainingTask):
    """Trains ``task.stage`` of an :class:`ARPipeline` (see the module docstring)."""

    config_class = ARTaskConfig
    batch_keys = BATCH_KEYS
    run_files = (TOKENIZER_FILE,)
    data_hint = LATENT_CACHE_HINT

    def __init__(self, config: TrainConfig, task_config: ARTaskConfig, seed: int):
        super().__init__(config, task_config, seed)
        self.stage, self.device = task_config.stage, torch.device("cpu")
        self.pipeline = load_pipeline(config, seed)
        self.spec = self.pipeline.specs[self.stage]

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        check_data(config.data, cls.data_hint)
        check_latent_data(config.data)

    # --- the model and its data ----------------------------------------------------------------

    @property
    def module(self) -> nn.Module:
        return self.pipeline.stages[self.stage]

    @property
    def name(self) -> str:
        return self.stage

    def training_data(self, data, num_validation_items: int) -> TrainingData:
        """The datasets, after refusing data of another codec (geometry or weights: the codes are the cached latents
        snapped to the model's codec); an unfitted tokenizer is then fitted on the training items."""
        check_data(data, self.data_hint)
        check_latent_data(data)
        for key, directory in data_directories(data):
            check_codec(key, directory, self.pipeline.codec, self.pipeline.sources["codec"]["id"])
        if self.pipeline.features_kind != "codec":
            if not data.options.get("semantic_tokens"):
                raise ConfigError(f"this model's semantic tokens are {self.pipeline.features_kind} features: train on a "
                                  "cache tokenized with `discodiff tokenize` and set data.options.semantic_tokens=true")
            self._use_cache_tokenizer(data.data_dir)
        training = TrainingData.from_config(data, num_validation_items, self.length_multiple, self.seed)
        if not self.pipeline.tokenizer_fitted:
            self.pipeline.tokenizer = fit_tokenizer(self.pipeline, training.train, self.settings.tokenizer)
            self.pipeline.tokenizer_fitted = True
        return training

    def _use_cache_tokenizer(self, data_dir: str) -> None:
        """SSL tokens come with their tokenizer from the cache: it must be of this model's extractor (and, for a
        fitted model, the model's own)."""
        path = CacheLayout(Path(data_dir)).semantic_tokenizer_file
        if not path.is_file():
            raise DataError(f"data.data_dir={data_dir} has no semantic tokens ({path} is missing); run `discodiff "
                            f"tokenize {data_dir} --stems STEMS --features {self.pipeline.features_kind} --model …` first")
        tokenizer = SemanticTokenizer.load(path)
        if tokenizer.description != self.pipeline.features.description:
            raise DataError(f"the semantic tokens of data.data_dir={data_dir} come from {tokenizer.description!r}, not "
                            f"this model's {self.pipeline.features.description!r}; tokenize with the model's extractor")
        if self.pipeline.tokenizer_fitted and not same_tokenizer(tokenizer, self.pipeline.tokenizer):
            raise DataError(f"the semantic tokenizer of data.data_dir={data_dir} is not this model's; tokenize the cache "
                            "with the model's tokenizer (discodiff tokenize --tokenizer MODEL/semantic_tokenizer.safetensors)")
        self.pipeline.tokenizer, self.pipeline.tokenizer_fitted = tokenizer, True

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.pipeline.codec.to(device)
        self.pipeline.text_encoder.to(device)

    # --- one step --------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, batch: dict, device: torch.device) -> ARBatch:
        check_batch_keys(batch, BATCH_KEYS, "the AR stage task")
        latents = batch["latents"].to(device, torch.float32)
        vocal = batch["vocal_latents"].to(device, torch.float32)
        channels = self.pipeline.codec.latent_channels
        if latents.ndim != 3 or latents.shape[1] != channels or vocal.shape != latents.shape:
            raise DataError(f"batch latents and vocal_latents must be [B, {channels}, L] for this model's codec, got "
                            f"{tuple(latents.shape)} and {tuple(vocal.shape)}; prepare the data with the model's codec")
        frame_mask = batch["frame_mask"].to(device)
        codes = self.pipeline.codec.snap(latents).clone().to(device)  # a normal tensor (snap runs in inference mode)
        if self.pipeline.features_kind == "codec":
            semantic, vocal_semantic, semantic_mask = (self.pipeline.semantic_tokens(latents),
                                                       self.pipeline.semantic_tokens(vocal), frame_mask)
        else:
            check_batch_keys(batch, SEMANTIC_KEYS, "the AR stage task on SSL semantic tokens (data.options.semantic_tokens)")
            semantic, vocal_semantic, semantic_mask = (batch[key].to(device) for key in SEMANTIC_KEYS)
        tokens = StageTokens(codes=codes, semantic=semantic, vocal_semantic=vocal_semantic, frame_mask=frame_mask,
                             semantic_mask=semantic_mask, codec_rate=self.pipeline.codec.frame_rate,
                             semantic_rate=self.pipeline.semantic_rate)
        if "text_sequence" in batch:
            text = TextCondition(batch["text_sequence"], batch["text_mask"], batch["text_pooled"]).to(device)
        else:
            text = self.pipeline.text_encoder(list(batch["captions"]), device=device)
        return ARBatch(tokens, text)

    def loss(self, model: nn.Module, prepared: ARBatch, generator: torch.Generator,
             drop_conditions: bool = True) -> tuple[torch.Tensor, None]:
        """Per-sample cross-entropy ``[B]``; draws the text and vocal dropout masks, in that order, from ``generator``."""
        size, device = prepared.batch_size, prepared.tokens.frame_mask.device
        if drop_conditions:
            text_dropped = condition_dropout(size, self.settings.text_dropout, generator, device)
            vocal_dropped = condition_dropout(size, self.settings.vocal_dropout, generator, device)
        else:
            text_dropped = vocal_dropped = torch.zeros(size, dtype=torch.bool, device=device)
        target, frame_mask = stage_target(self.spec, prepared.tokens)
        conditions = stage_conditions(self.spec, prepared.tokens, null_vocal=vocal_dropped)
        inputs, labels = self.spec.teacher_forcing(target)
        text_mask = prepared.text.mask & ~text_dropped[:, None]
        logits = model(inputs, self.spec.conditions_at_steps(conditions, target.shape[-1]), prepared.text.sequence,
                       text_mask).logits
        return self.spec.loss(logits, labels, self.spec.label_mask(frame_mask)), None

    # --- reports -----------------------------------------------------------------------------------

    @torch.no_grad()
    def validation_metrics(self, accelerator: Accelerator, model: nn.Module, loader: DataLoader, seed: int) -> dict[str, float]:
        """``val/loss`` (cross-entropy, nothing dropped) and ``val/accuracy`` (greedy next-token accuracy over real
        tokens), over every validation item."""
        generator = torch.Generator().manual_seed(process_seed(seed, accelerator.process_index))
        losses, correct, counts = [], [], []
        for batch in loader:
            prepared = self.prepare(batch, accelerator.device)
            losses.append(accelerator.gather_for_metrics(self.loss(model, prepared, generator, drop_conditions=False)[0]))
            hits, count = self._greedy_hits(model, prepared)
            correct.append(accelerator.gather_for_metrics(hits))
            counts.append(accelerator.gather_for_metrics(count))
        return {"val/loss": torch.cat(losses).mean().item(),
                "val/accuracy": (torch.cat(correct).sum() / torch.cat(counts).sum().clamp(min=1)).item()}

    def _greedy_hits(self, model: nn.Module, prepared: ARBatch) -> tuple[torch.Tensor, torch.Tensor]:
        target, frame_mask = stage_target(self.spec, prepared.tokens)
        inputs, labels = self.spec.teacher_forcing(target)
        conditions = self.spec.conditions_at_steps(stage_conditions(self.spec, prepared.tokens), target.shape[-1])
        logits = model(inputs, conditions, prepared.text.sequence, prepared.text.mask).logits
        mask = self.spec.label_mask(frame_mask)
        hits = ((logits.argmax(-1) == labels) & mask).flatten(1).sum(1).float()
        return hits, mask.flatten(1).sum(1).float()

    def samples(self, accelerator: Accelerator, model: nn.Module, batch: dict, step: int) -> TaskSamples | None:
        """Audio with this stage generated over the other stages' true tokens (coarse: true semantic tokens and fine
        codes; fine: true coarse codes); None for the semantic stage, whose tokens are not audio."""
        if self.stage == "semantic":
            return None
        settings = self.settings.samples
        prepared = self.prepare(batch, accelerator.device)
        tokens = prepared.tokens
        target, _ = stage_target(self.spec, tokens)
        generators = [torch.Generator(accelerator.device).manual_seed(self.seed + i) for i in range(prepared.batch_size)]
        with accelerator.autocast():
            generated = sample_stage(accelerator.unwrap_model(model), self.spec, target.shape[-1],
                                     stage_conditions(self.spec, tokens), (prepared.text.sequence, prepared.text.mask),
                                     [settings.text_guidance, settings.vocal_guidance] if self.spec.vocal_streams
                                     else [settings.text_guidance],
                                     SamplingSettings(settings.temperature, settings.top_k), generators, progress=False)
        codes = tokens.codes.clone()
        coarse = self.pipeline.coarse_codebooks
        if self.stage == "coarse":
            codes[:, :coarse] = generated
        else:
            codes[:, coarse:] = generated
        return TaskSamples(self.pipeline.codec.decode_codes(codes, progress=False), self.pipeline.sample_rate,
                           list(batch["captions"]))

    def reference(self, batch: dict) -> TaskSamples | None:
        """The batch's codes decoded (None for the semantic stage)."""
        if self.stage == "semantic":
            return None
        prepared = self.prepare(batch, self.device)
        return TaskSamples(self.pipeline.codec.decode_codes(prepared.tokens.codes, progress=False),
                           self.pipeline.sample_rate, list(batch["captions"]))

    # --- the run directory and export ------------------------------------------------------------

    def write_run_files(self, run_dir: Path) -> None:
        with atomic_file(Path(run_dir) / TOKENIZER_FILE) as temporary:
            self.pipeline.tokenizer.save(temporary)

    def check_resume(self, run_dir: Path) -> None:
        """A resumed run must have fitted the tokenizer it started with (its tokens are what the stage learnt)."""
        path = Path(run_dir) / TOKENIZER_FILE
        if path.is_file() and not same_tokenizer(SemanticTokenizer.load(path), self.pipeline.tokenizer):
            raise TrainingError(f"--resume: the semantic tokenizer fitted on the data differs from the run's ({path}): "
                                f"data.data_dir ({self.config.data.data_dir}) or task.tokenizer was changed; resume on "
                                "the data the run started with, or train into a new output_dir")

    def export(self, checkpoint_dir: Path, out_dir: Path) -> Path:
        """The trained stage with its EMA weights, and the run's tokenizer. Into an AR model directory it replaces that
        stage alone (train the three stages one after the other into one model); a fresh directory gets the run's
        starting pipeline for the other stages."""
        out_dir = Path(out_dir)
        tokenizer = SemanticTokenizer.load(Path(checkpoint_dir).parent.parent / TOKENIZER_FILE)
        if (out_dir / PIPELINE_FILE).is_file():
            pipeline = ARPipeline.from_pretrained(out_dir)
            ours = self.pipeline
            if (pipeline.pattern, pipeline.coarse_codebooks) != (ours.pattern, ours.coarse_codebooks) or \
                    pipeline.codec.fingerprint() != ours.codec.fingerprint():
                raise OutputError(f"{out_dir} holds an AR model with another codec, pattern or coarse split than this "
                                  "run; export into a new directory")
            if pipeline.tokenizer_fitted and not same_tokenizer(pipeline.tokenizer, tokenizer):
                raise OutputError(f"{out_dir} was exported with another semantic tokenizer than this run's; train every "
                                  "stage on the same data and task.tokenizer, or export into a new directory")
            pipeline.stages[self.stage] = self.module
        else:
            pipeline = self.pipeline
        pipeline.tokenizer, pipeline.tokenizer_fitted = tokenizer, True
        return pipeline.save_pretrained(out_dir)


def same_tokenizer(a: SemanticTokenizer, b: SemanticTokenizer) -> bool:
    return a.centroids.shape == b.centroids.shape and torch.equal(a.centroids, b.centroids)


def fit_tokenizer(pipeline: ARPipeline, dataset, settings: TokenizerFitSection) -> SemanticTokenizer:
    """k-means centroids over the semantic features (first codebooks' latents) of every real frame of the vocal and
    accompaniment latents of ``dataset``'s windows (whole windows, not crops), subsampled evenly to ``max_frames``."""
    rows, indices = _cache_rows(dataset)
    dim = pipeline.features.dim
    parts = []
    for index in indices:
        row = rows[int(index)]
        real = int(row["num_frames"])
        for column in ("latents", "vocal_latents"):
            parts.append(np.asarray(row[column][:dim, :real], dtype=np.float32).T)
    frames = np.concatenate(parts)
    if len(frames) > settings.max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, settings.max_frames).round().astype(int)]
    k = pipeline.tokenizer.k
    if len(frames) < k:
        raise DataError(f"the training data holds {len(frames)} latent frames, fewer than the tokenizer's k={k}; "
                        "prepare more data or build the model with a smaller tokenizer.k")
    return SemanticTokenizer.fit([frames], k=k, seed=settings.seed, extractor=pipeline.features)


def _cache_rows(dataset):
    """The cache rows behind a (subset of a) :class:`~discodiff.data.dataset.LatentCropDataset` and the row indices
    the dataset uses."""
    indices = None
    while hasattr(dataset, "indices"):
        indices = np.asarray(dataset.indices) if indices is None else np.asarray(dataset.indices)[indices]
        dataset = dataset.dataset
    if not hasattr(dataset, "rows"):
        raise DataError(f"the AR task fits its semantic tokenizer on a latent cache dataset; {type(dataset).__name__} "
                        "has none: train with the default data.dataset, or start from a model with a fitted tokenizer "
                        "(model.init_from)")
    return dataset.rows, np.arange(len(dataset.rows)) if indices is None else indices


def load_pipeline(config: TrainConfig, seed: int) -> ARPipeline:
    """The pipeline a run starts from: ``model.init_from``, else built from ``model.config`` seeded by ``seed``."""
    model = config.model
    if model.init_from:
        check_init_from(model)
        return ARPipeline.from_pretrained(model.init_from)
    return build_pipeline(ARConfig.from_yaml(model.config, model.overrides), seed=seed)
