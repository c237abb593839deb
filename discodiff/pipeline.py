"""``DiscoDiffPipeline``: prompt (+ vocal) → primary latents → secondary latents → snap → decode.

Shapes: audio ``[B, 1, T]`` at the codec's rate; latents ``[B, K·d, L]``; primary ``[B, d, L]``;
secondary ``[B, (K−1)·d, L]``. The U-Nets work on latents normalised by :class:`LatentStats`;
everything returned is denormalised.

Classifier-free guidance runs the conditional and unconditional branches in one batched forward
(see :mod:`discodiff.diffusion.guidance`). Contexts are ordered (text, vocal); with a vocal, the
text and vocal scales act separately (``v_∅ + s_text·(v_text − v_∅) + s_vocal·(v_full − v_text)``);
without one, the vocal context is the learned null in every row.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .audio import load_audio
from .codec import DacCodec
from .conditioning import DacLatentFeatures
from .diffusion import guided_denoiser, make_scheduler, sample
from .diffusion.objective import Denoiser, Generators
from .latents import LatentStats, merge_latents
from .models import UNet1DConditionModel

PIPELINE_FILE = "pipeline.json"
OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class DiscoDiffPipelineOutput(BaseOutput):
    """``audios``: ``[B, 1, T]`` (numpy or torch; None for ``output_type="latent"``); ``latents``: ``[B, K·d, L]``."""

    audios: np.ndarray | torch.Tensor | None
    latents: torch.Tensor


@dataclass
class Conditions:
    """Per-sample conditions in the U-Nets' context order (text, vocal); None = null for every sample."""

    contexts: list[torch.Tensor | None]
    masks: list[torch.Tensor | None]
    pooled: torch.Tensor | None

    def repeated(self, copies: int) -> "Conditions":
        """Each tensor repeated ``copies`` times along the batch, stage-major (for batched guidance)."""
        return Conditions([repeat_batch(c, copies) for c in self.contexts], [repeat_batch(m, copies) for m in self.masks],
                          repeat_batch(self.pooled, copies))


def repeat_batch(x: torch.Tensor | None, copies: int) -> torch.Tensor | None:
    """``[B, …]`` → ``[copies·B, …]`` (copy-major); None stays None."""
    return x if x is None or copies == 1 else torch.cat([x] * copies)


class DiscoDiffPipeline:
    """Coarse-to-fine latent diffusion on DAC latents, conditioned on text and (optionally) a vocal.

    Components: ``codec`` (:class:`DacCodec`), ``text_encoder`` (frozen; see
    :mod:`discodiff.conditioning`), ``primary`` and ``secondary`` (:class:`UNet1DConditionModel`),
    each with its own trainable vocal encoder (``primary_vocal_encoder`` /
    ``secondary_vocal_encoder``, None for text-only models) so that the two stages train
    independently, ``scheduler`` (a diffusers scheduler configured for v-prediction),
    ``latent_stats`` (:class:`LatentStats`). ``sources`` records where the codec and text encoder
    come from (hub id or path) so :meth:`save_pretrained` references them instead of copying them;
    ``defaults`` holds the sampling defaults.
    """

    def __init__(self, codec, text_encoder, primary, secondary, scheduler: SchedulerMixin, latent_stats: LatentStats,
                 sources: dict, defaults: dict, primary_vocal_encoder=None, secondary_vocal_encoder=None):
        if secondary.config.in_channels != codec.latent_channels or primary.config.out_channels != codec.codebook_dim:
            raise ValueError(
                f"U-Net channels (primary out {primary.config.out_channels}, secondary in {secondary.config.in_channels}) "
                f"do not match the codec (d={codec.codebook_dim}, K·d={codec.latent_channels})"
            )
        if (primary_vocal_encoder is None) != (secondary_vocal_encoder is None):
            raise ValueError("give a vocal encoder for both stages or for neither")
        self.codec, self.text_encoder, self.scheduler = codec, text_encoder, scheduler
        self.primary, self.secondary = primary, secondary
        self.primary_vocal_encoder, self.secondary_vocal_encoder = primary_vocal_encoder, secondary_vocal_encoder
        self.latent_stats, self.sources, self.defaults = latent_stats, dict(sources), dict(defaults)

    # --- device ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.primary.parameters()).device

    def to(self, device: torch.device | str) -> "DiscoDiffPipeline":
        for module in self._modules():
            module.to(device)
        return self

    def _modules(self) -> list[torch.nn.Module]:
        modules = (self.codec, self.text_encoder, self.primary, self.secondary, self.primary_vocal_encoder,
                   self.secondary_vocal_encoder)
        return [m for m in modules if m is not None]

    @property
    def has_vocal_encoder(self) -> bool:
        return self.primary_vocal_encoder is not None

    # --- conditions --------------------------------------------------------------------------

    def conditions(self, prompts: Sequence[str], vocal: torch.Tensor | None) -> tuple[Conditions, Conditions]:
        """(primary, secondary) conditions for a batch, in the U-Nets' context order (text, vocal).

        The text is encoded once; the vocal ``[B, 1, T]`` is encoded to normalised DAC latents once and
        then to tokens by each stage's vocal encoder.
        """
        if vocal is not None and not self.has_vocal_encoder:
            raise ValueError("this model has no vocal encoder (vocal_encoder.enabled was false); sample without a vocal")
        text = self.text_encoder(list(prompts), device=self.device)
        if not self.has_vocal_encoder:
            return (Conditions([text.sequence], [text.mask], text.pooled),) * 2
        features = None if vocal is None else DacLatentFeatures(self.codec, self.latent_stats)(vocal, progress=False).to(self.device)

        def with_vocal(encoder) -> Conditions:
            tokens = None if features is None else encoder(features)
            return Conditions([text.sequence, None if tokens is None else tokens.sequence],
                              [text.mask, None if tokens is None else tokens.mask], text.pooled)

        return with_vocal(self.primary_vocal_encoder), with_vocal(self.secondary_vocal_encoder)

    def denoiser(self, unet: UNet1DConditionModel, conditions: Conditions, scales: Sequence[float],
                 clean_prefix: torch.Tensor | None = None) -> Denoiser:
        """``denoise(x [B, C, L], t [B]) → v`` with guidance over the first ``len(scales)`` contexts.

        ``clean_prefix`` (the primary, for the secondary U-Net) is concatenated before the noisy input.
        With every scale 1 the fully conditional model runs alone (no unconditional rows).
        """
        def model(x, t, dropped):
            copies = x.shape[0] // conditions.contexts[0].shape[0]
            cond = conditions.repeated(copies)
            if clean_prefix is not None:
                x = torch.cat([repeat_batch(clean_prefix, copies), x], dim=1)
            dropped = list(dropped) + [None] * (len(cond.contexts) - len(dropped))
            return unet(x, t, cond.contexts, cond.masks, cond.pooled, condition_dropped=dropped).sample

        if all(scale == 1 for scale in scales):
            return lambda x, t: model(x, t, [])
        return guided_denoiser(model, scales)

    # --- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        vocal: str | Path | torch.Tensor | None = None,
        duration: float | None = None,
        num_inference_steps: int | None = None,
        text_guidance: float | None = None,
        vocal_guidance: float | None = None,
        generator: Generators = None,
        primary_latents: torch.Tensor | None = None,
        output_type: str = "np",
        progress: bool = True,
    ) -> DiscoDiffPipelineOutput:
        """Generate accompaniment/music.

        Args:
            prompt: one prompt or a list (batch size ``B``).
            vocal: a file, or audio ``[T]``, ``[1, T]`` or ``[B, 1, T]`` at the codec rate; the output then
                has the vocal's length. ``None``: music from text alone, ``duration`` seconds long.
            duration: seconds of audio without a vocal (default from the model's sampling config).
            num_inference_steps, text_guidance, vocal_guidance: default from the model's sampling config.
            generator: a ``torch.Generator`` or a list of one per sample.
            primary_latents: ``[B, d, L]`` denormalised primary latents: skip the primary U-Net and run
                the secondary alone (the paper's "w/ PL").
            output_type: ``np`` / ``pt`` audio, or ``latent`` (no decoding).
            progress: show progress bars.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got '{output_type}'")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        steps = num_inference_steps or self.defaults["num_inference_steps"]
        text_guidance = self.defaults["text_guidance"] if text_guidance is None else text_guidance
        vocal_guidance = self.defaults["vocal_guidance"] if vocal_guidance is None else vocal_guidance

        vocal_audio = self._vocal_batch(vocal, len(prompts))
        if vocal_audio is not None:
            num_samples = vocal_audio.shape[-1]
        else:
            num_samples = round((duration or self.defaults["duration"]) * self.codec.sample_rate)
        frames = self.codec.frames_for(num_samples)
        primary_conditions, secondary_conditions = self.conditions(prompts, vocal_audio)
        scales = [text_guidance, vocal_guidance] if vocal_audio is not None else [text_guidance]
        d = self.codec.codebook_dim

        if primary_latents is None:
            primary = sample(self.denoiser(self.primary, primary_conditions, scales), (len(prompts), d, frames),
                             self.scheduler, steps, generator, self.device, progress=progress)
        else:
            if primary_latents.shape != (len(prompts), d, frames):
                raise ValueError(f"primary_latents must be [{len(prompts)}, {d}, {frames}] for this input, "
                                 f"got {tuple(primary_latents.shape)}")
            primary = self.latent_stats.normalize(primary_latents.to(self.device))
        secondary = sample(self.denoiser(self.secondary, secondary_conditions, scales, clean_prefix=primary),
                           (len(prompts), self.codec.latent_channels - d, frames),
                           self.scheduler, steps, generator, self.device, progress=progress)

        if not self.latent_stats.fitted:
            warnings.warn("latent statistics are not fitted (an untrained model): output is not meaningful", stacklevel=3)
        latents = self.latent_stats.denormalize(merge_latents(primary, secondary))
        if output_type == "latent":
            return DiscoDiffPipelineOutput(audios=None, latents=latents)
        audio = self.codec.decode_latents(latents, length=num_samples, progress=progress)
        return DiscoDiffPipelineOutput(audios=audio.cpu().numpy() if output_type == "np" else audio, latents=latents)

    def _vocal_batch(self, vocal, batch_size: int) -> torch.Tensor | None:
        """Vocal input → ``[B, 1, T]`` on the pipeline device (a single vocal is shared by all prompts)."""
        if vocal is None:
            return None
        if isinstance(vocal, (str, Path)):
            vocal = load_audio(vocal, sample_rate=self.codec.sample_rate, mono=True)
        vocal = torch.as_tensor(vocal, dtype=torch.float32)
        vocal = vocal.reshape(1, 1, -1) if vocal.ndim < 3 else vocal
        if vocal.shape[1] != 1 or vocal.shape[0] not in (1, batch_size):
            raise ValueError(f"vocal must be [T], [1, T] or [{batch_size}, 1, T] mono audio, got {tuple(vocal.shape)}")
        return vocal.expand(batch_size, -1, -1).to(self.device)

    # --- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write U-Nets, vocal encoder, scheduler and statistics. The codec and text encoder are referenced
        by the id/path in ``sources``; only components marked ``bundled`` there (locally built ones that
        no hub has, like the tiny test models) are written into ``directory/<name>``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, module in (("codec", self.codec), ("text_encoder", self.text_encoder)):
            if self.sources[name].get("bundled"):
                module.save_pretrained(directory / name)
                self.sources[name]["id"] = name
        self.primary.save_pretrained(directory / "primary")
        self.secondary.save_pretrained(directory / "secondary")
        if self.has_vocal_encoder:
            self.primary_vocal_encoder.save_pretrained(directory / "primary_vocal_encoder")
            self.secondary_vocal_encoder.save_pretrained(directory / "secondary_vocal_encoder")
        self.scheduler.save_pretrained(directory / "scheduler")
        self.latent_stats.save(directory / "latent_stats.json")
        manifest = {"sources": self.sources, "defaults": self.defaults, "vocal_encoder": self.has_vocal_encoder}
        (directory / PIPELINE_FILE).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, codec: str | None = None, text_encoder: str | None = None,
                        device: torch.device | str | None = None) -> "DiscoDiffPipeline":
        """Load a pipeline directory; ``codec`` / ``text_encoder`` override the referenced id or path."""
        import diffusers

        from .conditioning import VocalConditioner, build_text_conditioner

        directory = Path(directory)
        manifest_path = directory / PIPELINE_FILE
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{directory} is not a discodiff model directory (no {PIPELINE_FILE}); "
                                    "create one with `discodiff new-model` or training export")
        manifest = json.loads(manifest_path.read_text())
        sources = manifest["sources"]
        codec_module = DacCodec.from_pretrained(_resolve(codec or sources["codec"]["id"], directory), backend=sources["codec"]["backend"])
        text_module = build_text_conditioner(sources["text_encoder"]["kind"], _resolve(text_encoder or sources["text_encoder"]["id"], directory),
                                             max_length=sources["text_encoder"]["max_length"])
        vocal_encoders = {f"{stage}_vocal_encoder": VocalConditioner.from_pretrained(directory / f"{stage}_vocal_encoder")
                          for stage in ("primary", "secondary") if manifest["vocal_encoder"]}
        scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
        scheduler_class = getattr(diffusers, scheduler_config["_class_name"])
        pipeline = cls(
            codec=codec_module,
            text_encoder=text_module,
            primary=UNet1DConditionModel.from_pretrained(directory / "primary"),
            secondary=UNet1DConditionModel.from_pretrained(directory / "secondary"),
            scheduler=scheduler_class.from_pretrained(directory / "scheduler"),
            latent_stats=LatentStats.load(directory / "latent_stats.json"),
            sources=sources,
            defaults=manifest["defaults"],
            **vocal_encoders,
        )
        return pipeline.to(device) if device is not None else pipeline


def _resolve(id_or_path: str, directory: Path) -> str:
    """A path relative to the model directory if it exists there, else the id/path unchanged."""
    local = directory / id_or_path
    return str(local) if not Path(id_or_path).is_absolute() and local.exists() else str(id_or_path)
