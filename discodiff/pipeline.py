"""``DiscoDiffPipeline``: prompt (+ vocal) → primary latents → secondary latents → snap → decode.

Shapes: audio ``[B, 1, T]`` at the codec's rate; latents ``[B, K·d, L]``; primary ``[B, P·d, L]``;
secondary ``[B, (K−P)·d, L]`` (P = 1 in the paper; P = K is the flat ablation: no secondary). The U-Nets work on latents normalised by :class:`LatentStats`;
everything returned is denormalised.

Classifier-free guidance runs the conditional and unconditional branches in one batched forward
(see :mod:`discodiff.diffusion.guidance`). Contexts are ordered (text, vocal); with a vocal, the
text and vocal scales act separately (``v_∅ + s_text·(v_text − v_∅) + s_vocal·(v_full − v_text)``);
without one, the vocal context is the learned null in every row.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .call_inputs import (check_duration, check_generator, check_prompts, check_scale,
                          num_output_samples, vocal_batch)
from .codec.dac_codec import MIN_CHUNK_SECONDS
from .conditioning import DacLatentFeatures, TextCondition
from .config import MAX_INFERENCE_STEPS, CodecConfig, SamplingConfig, TextEncoderConfig
from .diffusion import conditioned_denoiser, sample
from .diffusion.inpainting import inpainting_denoiser
from .diffusion.objective import Denoiser
from .diffusion.sampling import SCHEDULER_DEFAULTS, _check_compatible, check_num_steps
from .errors import GenerationError, ModelDirectoryError, first_line, is_integer
from .guidance import Conditions, Generators
from .latents import LatentStats, merge_latents
from .long_form import Window, overlap_frames, plan_windows
from .model_encoders import load_encoders, save_bundled_encoders
from .model_files import LOAD_ERRORS, MODEL_CONFIG, REPAIR, carry_over, load_model, read_json_object, sections_problem
from .models import UNet1DConditionModel
from .outputs import atomic_directory
from .pipeline_utils import FAMILY_KEY, PIPELINE_FILE

FAMILY_NAME = "discodiff"
LATENT_STATS_FILE = "latent_stats.json"
SCHEDULER_DIR, SCHEDULER_CONFIG = "scheduler", "scheduler_config.json"
COMPONENTS = ("codec", "text_encoder", "primary", "secondary", "primary_vocal_encoder", "secondary_vocal_encoder",
              SCHEDULER_DIR, LATENT_STATS_FILE, PIPELINE_FILE)
OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class DiscoDiffPipelineOutput(BaseOutput):
    """``audios``: ``[B, 1, T]`` (numpy or torch; None for ``output_type="latent"``); ``latents``: ``[B, K·d, L]``."""

    audios: np.ndarray | torch.Tensor | None
    latents: torch.Tensor
    sample_rate: int


class DiscoDiffPipeline:
    """Coarse-to-fine latent diffusion on DAC latents, conditioned on text and (optionally) a vocal.

    Components: ``codec`` (:class:`DacCodec`), ``text_encoder`` (frozen; see
    :mod:`discodiff.conditioning`), ``primary`` and ``secondary`` (:class:`UNet1DConditionModel`; the primary
    generates the first ``P·d`` latent channels, codebooks 0 … P−1; ``secondary`` is None for a flat model, P = K),
    each with its own trainable vocal encoder (``primary_vocal_encoder`` /
    ``secondary_vocal_encoder``, None for text-only models) so that the two stages train
    independently, ``scheduler`` (a diffusers scheduler configured for v-prediction),
    ``latent_stats`` (:class:`LatentStats`). ``sources`` records where the codec and text encoder
    come from (hub id or path) so :meth:`save_pretrained` references them instead of copying them;
    ``defaults`` holds the sampling defaults.
    """

    def __init__(self, codec, text_encoder, primary, secondary, scheduler: SchedulerMixin, latent_stats: LatentStats,
                 sources: dict, defaults: dict, primary_vocal_encoder=None, secondary_vocal_encoder=None):
        problem = stage_channels_problem(codec, primary.config, None if secondary is None else secondary.config)
        if problem:
            raise ValueError(problem)
        expected_secondary_encoder = secondary is not None and primary_vocal_encoder is not None
        if (secondary_vocal_encoder is not None) != expected_secondary_encoder:
            raise ValueError("give a vocal encoder for every stage (a flat model has no secondary stage) or for none")
        self.codec, self.text_encoder, self.scheduler = codec, text_encoder, scheduler
        self.primary, self.secondary = primary, secondary
        self.primary_vocal_encoder, self.secondary_vocal_encoder = primary_vocal_encoder, secondary_vocal_encoder
        self.latent_stats, self.sources, self.defaults = latent_stats, dict(sources), dict(defaults)

    # --- device ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.primary.parameters()).device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DiscoDiffPipeline":
        """Move every part to ``device`` and/or cast its floating-point weights to ``dtype``."""
        target = {name: value for name, value in (("device", device), ("dtype", dtype)) if value is not None}
        for module in self._modules():  # only what is given: diffusers warns about any dtype argument, even None
            module.to(**target)
        return self

    def _modules(self) -> list[torch.nn.Module]:
        modules = (self.codec, self.text_encoder, self.primary, self.secondary, self.primary_vocal_encoder,
                   self.secondary_vocal_encoder)
        return [m for m in modules if m is not None]

    def trainable_components(self) -> dict[str, torch.nn.Module]:
        """The trained parts by name (U-Nets and vocal encoders; the codec and text encoder are frozen)."""
        names = ("primary", "secondary", "primary_vocal_encoder", "secondary_vocal_encoder")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def sample_rate(self) -> int:
        """The output sample rate (the codec's)."""
        return self.codec.sample_rate

    @property
    def default_duration(self) -> float:
        """Seconds generated without a vocal when no ``duration`` is given (the training window)."""
        return float(self.defaults["duration"])

    @property
    def has_vocal_encoder(self) -> bool:
        return self.primary_vocal_encoder is not None

    @property
    def primary_channels(self) -> int:
        """``P·d``: the latent channels the primary U-Net generates (codebooks 0 … P−1)."""
        return self.primary.config.out_channels

    @property
    def is_flat(self) -> bool:
        """One U-Net on all codebooks (the flat ablation), no secondary stage."""
        return self.secondary is None

    # --- conditions --------------------------------------------------------------------------

    def conditions(self, prompts: Sequence[str], vocal: torch.Tensor | None) -> tuple[Conditions, Conditions | None]:
        """(primary, secondary) conditions for a batch, in the U-Nets' context order (text, vocal); the secondary's
        is None for a flat model.

        The text is encoded once; the vocal ``[B, 1, T]`` is encoded to normalised DAC latents once
        (:meth:`vocal_features`) and then to tokens by each stage's vocal encoder (:meth:`stage_conditions`).
        """
        if vocal is not None and not self.has_vocal_encoder:
            raise GenerationError("this model has no vocal encoder (vocal_encoder.enabled was false); sample without a vocal")
        text = self.text_encoder(list(prompts), device=self.device)
        features = self.vocal_features(vocal)
        primary = self.stage_conditions(self.primary_vocal_encoder, text, features)
        return primary, None if self.is_flat else self.stage_conditions(self.secondary_vocal_encoder, text, features)

    def vocal_features(self, vocal: torch.Tensor | None) -> torch.Tensor | None:
        """Vocal ``[B, 1, T]`` → its normalised DAC latents ``[B, K·d, L]`` (None without a vocal or a vocal encoder)."""
        if vocal is None or not self.has_vocal_encoder:
            return None
        return DacLatentFeatures(self.codec, self.latent_stats)(vocal, progress=False).to(self.device)

    def stage_conditions(self, encoder, text: TextCondition, features: torch.Tensor | None) -> Conditions:
        """One stage's conditions from the text encoder's output and the vocal's :meth:`vocal_features` (None: the
        learned null), tokenised by that stage's vocal ``encoder`` (text alone for a model without one)."""
        if not self.has_vocal_encoder:
            return Conditions([text.sequence], [text.mask], text.pooled)
        tokens = None if features is None else encoder(features)
        return Conditions([text.sequence, None if tokens is None else tokens.sequence],
                          [text.mask, None if tokens is None else tokens.mask], text.pooled)

    def denoiser(self, unet: UNet1DConditionModel, conditions: Conditions, scales: Sequence[float],
                 clean_prefix: torch.Tensor | None = None) -> Denoiser:
        """``denoise(x [B, C, L], t [B]) → v`` with guidance over the first ``len(scales)`` contexts
        (:func:`~discodiff.diffusion.conditioned_denoiser`; with every scale 1 one conditional pass)."""
        return conditioned_denoiser(unet_call(unet), conditions, scales, clean_prefix)

    # --- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        vocal: str | Path | torch.Tensor | None = None,
        duration: float | None = None,
        generator: Generators = None,
        progress: bool = True,
        *,
        num_inference_steps: int | None = None,
        text_guidance: float | None = None,
        vocal_guidance: float | None = None,
        scheduler: str | None = None,
        primary_latents: torch.Tensor | None = None,
        overlap: float | None = None,
        output_type: str = "np",
    ) -> DiscoDiffPipelineOutput:
        """Generate accompaniment/music.

        Every argument is checked before any model runs; a bad one raises :class:`GenerationError` naming
        the valid range. ``None`` means the model's default (from its sampling config) for every setting.

        Args:
            prompt: one prompt or a non-empty list (batch size ``B``); not all of them blank.
            vocal: a file, or audio ``[T]``, ``[1, T]`` or ``[B, 1, T]`` at the codec rate, at most
                ``MAX_DURATION_SECONDS`` long; the output then has the vocal's length. ``None``: music from
                text alone, ``duration`` seconds long.
            duration: seconds of audio without a vocal, in ``(0, MAX_DURATION_SECONDS]``. An output longer than the
                model's window (its training window, :attr:`window_frames`) is generated window by window, each
                window inpainting its overlap with the one before (:mod:`discodiff.long_form`): the primary for the
                whole output first, then the secondary, and decoded in chunks of the window: memory is bounded by the
                window (and the output itself).
            num_inference_steps: a whole number in ``1 … MAX_INFERENCE_STEPS``.
            text_guidance, vocal_guidance: finite, in ``0 … 100`` (1 = unguided, 0 ignores the condition).
            generator: a ``torch.Generator`` or a list of exactly ``B`` of them.
            progress: show progress bars.
            scheduler: a sampler name (:data:`~discodiff.diffusion.SCHEDULERS`) for this call instead of the model's.
            primary_latents: ``[B, P·d, L]`` denormalised primary latents: skip the primary U-Net and run
                the secondary alone (the paper's "w/ PL"; not for a flat model, which has no secondary).
            overlap: seconds each window of a long output shares with the one before, in ``[0, window)``; None: a
                quarter of the window. 0 makes independent windows (naive concatenation, for comparison only).
            output_type: ``np`` / ``pt`` audio, or ``latent`` (no decoding).
        """
        prompts = check_prompts(prompt)
        sampler = self.scheduler if scheduler is None else _scheduler_named(scheduler)
        steps, text_guidance, vocal_guidance = self._check_sampling_arguments(
            num_inference_steps, text_guidance, vocal_guidance, duration, generator, len(prompts), output_type, sampler)
        overlap = overlap_frames(overlap, self.window_frames, self.codec.frame_rate)
        if vocal is not None and not self.has_vocal_encoder:
            raise GenerationError("this model has no vocal encoder (vocal_encoder.enabled was false); sample without a vocal")

        vocal_audio = vocal_batch(vocal, len(prompts), self.codec.sample_rate, self.device)
        if vocal_audio is not None:
            num_samples = vocal_audio.shape[-1]
        else:
            num_samples = num_output_samples(duration, self.defaults["duration"], self.codec.sample_rate)
        frames = self.codec.frames_for(num_samples)
        p = self.primary_channels
        if primary_latents is not None and self.is_flat:
            raise GenerationError("primary_latents: this is a flat model (one U-Net on all codebooks, no secondary "
                                  "stage); sample without primary_latents")
        if primary_latents is not None and tuple(primary_latents.shape) != (len(prompts), p, frames):
            raise GenerationError(f"primary_latents must be [{len(prompts)}, {p}, {frames}] for this input, "
                                  f"got {tuple(primary_latents.shape)}")

        windows = plan_windows(frames, self.window_frames, overlap)
        text = self.text_encoder(list(prompts), device=self.device)
        scales = [text_guidance, vocal_guidance] if vocal_audio is not None else [text_guidance]
        hop = self.codec.hop_length
        features = [None if vocal_audio is None else self.vocal_features(vocal_audio[..., w.start * hop: w.stop * hop])
                    for w in windows]  # each window's span of the vocal, encoded once for both stages
        run = dict(sampler=sampler, steps=steps, generator=generator, progress=progress)
        if primary_latents is None:
            primary = self._sample_windows("primary", windows, (len(prompts), p, frames), text, features, scales, **run)
        else:
            primary = self.latent_stats.normalize(primary_latents.to(self.device))
        normalized = primary
        if not self.is_flat:
            secondary = self._sample_windows("secondary", windows, (len(prompts), self.codec.latent_channels - p, frames),
                                             text, features, scales, clean_prefix=primary, **run)
            normalized = merge_latents(primary, secondary)

        if not self.latent_stats.fitted:
            warnings.warn("latent statistics are not fitted (an untrained model): output is not meaningful", stacklevel=3)
        latents = self.latent_stats.denormalize(normalized)
        if output_type == "latent":
            return DiscoDiffPipelineOutput(audios=None, latents=latents, sample_rate=self.sample_rate)
        audio = self.codec.decode_latents(latents, length=num_samples, progress=progress,
                                          chunk_seconds=max(MIN_CHUNK_SECONDS, self.default_duration))
        return DiscoDiffPipelineOutput(audios=audio.cpu().numpy() if output_type == "np" else audio, latents=latents,
                                       sample_rate=self.sample_rate)

    @property
    def window_frames(self) -> int:
        """Latent frames of one window: the model's training window (``defaults["duration"]``). Longer outputs are
        generated window by window (:mod:`discodiff.long_form`)."""
        return self.codec.frames_for(round(self.default_duration * self.sample_rate))

    def _sample_windows(self, stage: str, windows: Sequence[Window], shape: tuple[int, int, int], text: TextCondition,
                        features: Sequence[torch.Tensor | None], scales: Sequence[float], sampler: SchedulerMixin,
                        steps: int, generator: Generators, progress: bool,
                        clean_prefix: torch.Tensor | None = None) -> torch.Tensor:
        """One stage's normalised latents ``shape = [B, C, L]`` for the whole output, window by window: each window's
        known frames (its overlap with the earlier ones) are inpainted (:func:`inpainting_denoiser`), its conditions
        are its own span's vocal features (``features``, one per window, shared by both stages) and, for the
        secondary, its span of ``clean_prefix [B, P·d, L]``."""
        unet, encoder = ((self.primary, self.primary_vocal_encoder) if stage == "primary"
                         else (self.secondary, self.secondary_vocal_encoder))
        latents = torch.zeros(shape, device=self.device)
        many = len(windows) > 1
        for window, window_features in zip(tqdm(windows, desc=f"{stage} windows", unit="window",
                                                disable=not (progress and many)), features):
            span = slice(window.start, window.stop)
            conditions = self.stage_conditions(encoder, text, window_features)
            denoise = self.denoiser(unet, conditions, scales, None if clean_prefix is None else clean_prefix[..., span])
            known = latents[..., window.start: window.start + window.known]
            generated = sample(inpainting_denoiser(denoise, known), (shape[0], shape[1], window.length), sampler, steps,
                               generator, self.device, progress=progress and not many)
            latents[..., window.new] = generated[..., window.known:]
        return latents

    def _check_sampling_arguments(self, steps, text_guidance, vocal_guidance, duration, generator, batch_size: int,
                                  output_type: str, sampler: SchedulerMixin) -> tuple[int, float, float]:
        """Validate every scalar argument of :meth:`__call__` before any compute (None = the model's default);
        returns ``(steps, text_guidance, vocal_guidance)``."""
        if output_type not in OUTPUT_TYPES:
            raise GenerationError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        steps = self.defaults["num_inference_steps"] if steps is None else steps
        if not is_integer(steps) or not 1 <= steps <= MAX_INFERENCE_STEPS:
            raise GenerationError(f"num_inference_steps={steps!r}: must be a whole number in 1 … {MAX_INFERENCE_STEPS} "
                                  f"(this model's default is {self.defaults['num_inference_steps']})")
        check_num_steps(sampler, steps)  # the scheduler's own limit (discrete ones: its training steps)
        scales = [check_scale(name, self.defaults[name] if value is None else value)
                  for name, value in (("text_guidance", text_guidance), ("vocal_guidance", vocal_guidance))]
        check_duration(duration)
        check_generator(generator, batch_size)
        return int(steps), scales[0], scales[1]

    # --- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write U-Nets, vocal encoder, scheduler and statistics. The codec and text encoder are referenced
        by the id/path in ``sources``; only components marked ``bundled`` there (locally built ones that
        no hub has, like the tiny test models) are written into ``directory/<name>``.

        The directory is built under a temporary name next to ``directory`` and then swapped in
        (:func:`~discodiff.outputs.atomic_directory`), so a full disk or a kill never leaves a partial model
        or destroys the earlier one. Everything is written from memory, so saving back into the directory a
        pipeline was loaded from works; files of an earlier ``directory`` that are not pipeline components
        (a README, a codec folder that ``sources`` references by a relative path) are carried over.
        """
        directory = Path(directory)
        sources = copy.deepcopy(self.sources)
        with atomic_directory(directory) as build:
            save_bundled_encoders(build, sources, self.codec, self.text_encoder)
            for name, component in self.trainable_components().items():
                component.save_pretrained(build / name)
            self.scheduler.save_pretrained(build / SCHEDULER_DIR)
            self.latent_stats.save(build / LATENT_STATS_FILE)
            carry_over(directory, build, sources, COMPONENTS)
            manifest = {FAMILY_KEY: FAMILY_NAME, "sources": sources, "defaults": self.defaults,
                        "vocal_encoder": self.has_vocal_encoder}
            (build / PIPELINE_FILE).write_text(json.dumps(manifest, indent=1))
        self.sources = sources
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, codec: str | None = None, text_encoder: str | None = None,
                        device: torch.device | str | None = None) -> "DiscoDiffPipeline":
        """Load a pipeline directory; ``codec`` / ``text_encoder`` override the referenced id or path. Every part is
        loaded in float32 whatever its stored precision (the shipped model is stored in fp16).

        A missing or damaged part raises one :class:`ModelDirectoryError` naming the file or folder (a
        damaged codec or text encoder directory: :class:`CodecError` / :class:`ConditioningError`, also
        naming the file). Every tensor read from the directory is copied into memory, so nothing is read
        from its files later (a later :meth:`save_pretrained` may replace them).
        """
        from .conditioning import VocalConditioner

        directory = Path(directory)
        manifest_path = directory / PIPELINE_FILE
        if not manifest_path.is_file():
            if directory.is_dir() and (directory / "primary").is_dir():
                raise ModelDirectoryError(f"{manifest_path}: missing; {REPAIR}")
            raise ModelDirectoryError(f"{directory} is not a discodiff model directory (no {PIPELINE_FILE}); "
                                      "create one with `discodiff new-model` or training export")
        manifest = read_json_object(manifest_path, "the pipeline manifest")
        problem = _manifest_problem(manifest)
        if problem:
            raise ModelDirectoryError(f"{manifest_path}: {problem}; {REPAIR}")
        sources = manifest["sources"]

        codec_module, codec_location, text_module, text_location = load_encoders(directory, sources, codec, text_encoder)
        primary = load_model(UNet1DConditionModel, directory / "primary", "primary U-Net")
        flat = primary.config.out_channels == codec_module.latent_channels  # one U-Net on all codebooks
        secondary = None if flat else load_model(UNet1DConditionModel, directory / "secondary", "secondary U-Net")
        stages = ("primary",) if flat else ("primary", "secondary")
        vocal_encoders = {f"{stage}_vocal_encoder": load_model(VocalConditioner, directory / f"{stage}_vocal_encoder",
                                                                 f"{stage} vocal encoder")
                          for stage in stages if manifest["vocal_encoder"]}
        scheduler = _load_scheduler(directory / SCHEDULER_DIR)
        latent_stats = LatentStats.load(directory / LATENT_STATS_FILE, error=ModelDirectoryError, fix=REPAIR)
        _check_fit(directory, codec_module, codec_location, text_module, text_location, primary, secondary,
                   vocal_encoders, latent_stats)
        pipeline = cls(codec=codec_module, text_encoder=text_module, primary=primary, secondary=secondary,
                       scheduler=scheduler, latent_stats=latent_stats, sources=sources, defaults=manifest["defaults"],
                       **vocal_encoders)
        text_module.float()  # the codec loads in float32 already (DacCodec.from_pretrained), the models below too
        return pipeline.to(device) if device is not None else pipeline


def _scheduler_named(name: str) -> SchedulerMixin:
    from .diffusion import SCHEDULERS, make_scheduler

    if name not in SCHEDULERS:
        raise GenerationError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    return make_scheduler(name)


def unet_call(unet: UNet1DConditionModel):
    """``unet`` as ``call(x, t, conditions, dropped) → v``, the form :func:`~discodiff.diffusion.conditioned_denoiser` takes."""
    def call(x: torch.Tensor, t: torch.Tensor, conditions: Conditions, dropped: list[torch.Tensor | None]) -> torch.Tensor:
        return unet(x, t, conditions.contexts, conditions.masks, conditions.pooled, condition_dropped=dropped).sample

    return call


# --- loading helpers ---------------------------------------------------------------------------------

def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with the structure of a ``pipeline.json`` object (first problem), or None.

    ``sources`` and ``defaults`` are checked against the model config schema (:mod:`discodiff.config`), so a
    model directory obeys the same types and ranges as the config it was built from.
    """
    missing = [key for key in ("sources", "defaults", "vocal_encoder") if key not in manifest]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(manifest["vocal_encoder"], bool):
        return f"vocal_encoder must be true or false, got {manifest['vocal_encoder']!r}"
    if manifest.get(FAMILY_KEY, FAMILY_NAME) != FAMILY_NAME:
        return f"{FAMILY_KEY} is {manifest[FAMILY_KEY]!r}, not {FAMILY_NAME!r}; load it with discodiff.load_pipeline"
    sources, defaults = manifest["sources"], manifest["defaults"]
    if not isinstance(sources, dict):
        return f"sources must be an object with codec and text_encoder, got {sources!r}"
    sections = [(f"sources.{name}", schema, sources.get(name)) for name, schema in
                (("codec", CodecConfig), ("text_encoder", TextEncoderConfig))] + [("defaults", SamplingConfig, defaults)]
    return sections_problem(sections, PIPELINE_FILE)


def _load_scheduler(folder: Path) -> SchedulerMixin:
    """The scheduler saved in ``folder``: one of the supported classes, configured for v-prediction."""
    if not folder.is_dir():
        raise ModelDirectoryError(f"{folder}: missing (the scheduler); {REPAIR}")
    config_file = folder / SCHEDULER_CONFIG
    config = read_json_object(config_file, "the scheduler config")
    supported = {scheduler_class.__name__: scheduler_class for scheduler_class, _ in SCHEDULER_DEFAULTS.values()}
    class_name = config.get("_class_name")
    if class_name not in supported:
        raise ModelDirectoryError(f"{config_file}: _class_name {class_name!r} is not one of {', '.join(supported)}; {REPAIR}")
    try:
        scheduler = supported[class_name].from_config(config)
        _check_compatible(scheduler)
    except LOAD_ERRORS as err:
        raise ModelDirectoryError(f"{config_file}: holds invalid values ({first_line(err)}); {REPAIR}") from err
    return scheduler


def stage_channels_problem(codec, primary_config, secondary_config) -> str | None:
    """What is wrong with the U-Nets' channels for ``codec`` (None when they fit): the primary maps ``P·d`` channels
    to themselves (1 ≤ P ≤ K); the secondary, absent exactly when P = K, maps ``K·d`` to the other ``(K−P)·d``."""
    d, channels = codec.codebook_dim, codec.latent_channels
    primary_channels = primary_config.out_channels
    if primary_config.in_channels != primary_channels or primary_channels % d or not d <= primary_channels <= channels:
        return (f"primary U-Net in/out channels {primary_config.in_channels}/{primary_channels} must both be P·d for "
                f"P in 1 … K (d={d}, K·d={channels})")
    if secondary_config is None:
        return None if primary_channels == channels else (
            f"no secondary U-Net, but the primary generates only {primary_channels} of the {channels} latent channels")
    if primary_channels == channels:
        return f"the primary U-Net generates all {channels} latent channels (a flat model) but a secondary was given"
    wanted = (channels, channels - primary_channels)
    if (secondary_config.in_channels, secondary_config.out_channels) != wanted:
        return (f"secondary U-Net in/out channels {secondary_config.in_channels}/{secondary_config.out_channels}, "
                f"expected {wanted[0]}/{wanted[1]} after a primary of {primary_channels} channels")
    return None


def _check_fit(directory: Path, codec, codec_location: str, text_encoder, text_location: str, primary, secondary,
               vocal_encoders: dict, stats: LatentStats) -> None:
    """The loaded parts fit together (channels, context widths, statistics), or a :class:`ModelDirectoryError`."""
    d, channels = codec.codebook_dim, codec.latent_channels
    codec_hint = f"the codec {codec_location} (d={d}, K·d={channels}) is not the one this model was made with"
    problem = stage_channels_problem(codec, primary.config, None if secondary is None else secondary.config)
    if problem:
        raise ModelDirectoryError(f"{directory}: {problem}: {codec_hint}; pass the codec it was made with (--codec), "
                                  f"or {REPAIR}")
    expected = {"primary": primary} if secondary is None else {"primary": primary, "secondary": secondary}
    for name, unet in expected.items():
        context_dims = list(unet.config.context_dims)
        if len(context_dims) != 1 + bool(vocal_encoders):
            raise ModelDirectoryError(
                f"{directory / PIPELINE_FILE}: vocal_encoder is {str(bool(vocal_encoders)).lower()} but "
                f"{directory / name / MODEL_CONFIG} has {len(context_dims)} contexts (text{', vocal' * (len(context_dims) > 1)}); "
                f"{REPAIR}")
        wanted = [text_encoder.sequence_dim] + ([vocal_encoders[f"{name}_vocal_encoder"].config.out_dim]
                                                if vocal_encoders else [])
        if context_dims != wanted or unet.config.pooled_dim != text_encoder.pooled_dim:
            raise ModelDirectoryError(
                f"{directory / name / MODEL_CONFIG}: context widths {context_dims} (pooled {unet.config.pooled_dim}) do "
                f"not fit the text encoder {text_location} and vocal encoder ({wanted}, pooled {text_encoder.pooled_dim}); "
                f"pass the text encoder it was made with (--text-encoder), or {REPAIR}")
    for name, encoder in vocal_encoders.items():
        if encoder.config.in_channels != channels:
            raise ModelDirectoryError(f"{directory / name / MODEL_CONFIG}: in_channels {encoder.config.in_channels}, "
                                      f"expected {channels}: {codec_hint}; {REPAIR}")
    if stats.codebook_dim != d or stats.channels != channels:
        raise ModelDirectoryError(f"{directory / LATENT_STATS_FILE}: statistics for {stats.channels} channels (d="
                                  f"{stats.codebook_dim}) do not fit {codec_hint.split(' is not')[0]}; {REPAIR}")
