"""What one stage of the diffusion task trains (:mod:`.diffusion_task`): its trainable modules (:class:`StageModel`) and
its loss on a batch (:class:`StageObjective`).

The primary stage learns the normalised first ``P·d`` channels (codebooks 0 … P−1; P = 1 in the paper, P = K for
a flat model). The secondary stage learns the other ``(K−P)·d`` channels given the normalised ground-truth primary as
a clean prefix. Both are
conditioned on the frozen text encoder's output and on the stage's own vocal encoder applied to the
normalised vocal latents; each condition is dropped per sample, independently, for guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from discodiff.conditioning import TextCondition
from discodiff.diffusion import sample_timesteps, v_diffusion_loss
from discodiff.errors import DataError, TrainingError
from discodiff.guidance import Conditions, condition_dropout
from discodiff.latents import LatentStats, merge_latents, split_latents
from discodiff.pipeline import DiscoDiffPipeline, unet_call

from .data import check_batch_keys

BATCH_KEYS = ("latents", "vocal_latents", "frame_mask", "captions")


class StageModel(nn.Module):
    """One stage's trainable modules as a single module for ``accelerator.prepare``: its U-Net and its vocal encoder
    (None for text-only models). ``forward`` predicts v, so the vocal encoder runs inside the wrapped module."""

    def __init__(self, unet: nn.Module, vocal_encoder: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.vocal_encoder = vocal_encoder

    @classmethod
    def from_pipeline(cls, pipeline: DiscoDiffPipeline, stage: str) -> StageModel:
        """The ``primary`` or ``secondary`` modules of ``pipeline`` (shared, not copied)."""
        if getattr(pipeline, stage) is None:
            raise TrainingError(f"task.stage={stage}: this model is flat (primary_codebooks = the codec's "
                                f"{pipeline.codec.n_codebooks} codebooks), so it has no {stage} stage; train task.stage=primary")
        return cls(getattr(pipeline, stage), getattr(pipeline, f"{stage}_vocal_encoder"))

    @property
    def length_multiple(self) -> int:
        """Frame counts that the U-Net processes without padding are multiples of this."""
        return 2 ** (len(self.unet.config.block_channels) - 1)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def conditions(self, text: TextCondition, vocal_features: torch.Tensor, frame_mask: torch.Tensor | None) -> Conditions:
        """The U-Net's conditions in its context order (text, then this stage's vocal tokens when it has a vocal
        encoder): the one place that assembles them, for the training forward and for samples. ``vocal_features
        [B, K·d, L]`` normalised, ``frame_mask [B, L]`` bool."""
        if self.vocal_encoder is None:
            return Conditions([text.sequence], [text.mask], text.pooled)
        tokens = self.vocal_encoder(vocal_features, frame_mask)
        return Conditions([text.sequence, tokens.sequence], [text.mask, tokens.mask], text.pooled)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text: TextCondition,
        vocal_features: torch.Tensor,
        frame_mask: torch.Tensor,
        text_dropped: torch.Tensor,
        vocal_dropped: torch.Tensor,
    ) -> torch.Tensor:
        """v ``[B, C_out, L]`` for ``sample [B, C_in, L]``, ``timestep [B]``; ``vocal_features [B, K·d, L]`` normalised,
        ``frame_mask [B, L]`` and the ``*_dropped [B]`` masks bool (True = use the learned null)."""
        conditions = self.conditions(text, vocal_features, frame_mask)
        dropped = [text_dropped, vocal_dropped][: len(conditions.contexts)]
        return unet_call(self.unet)(sample, timestep, conditions, dropped)


@dataclass
class StageBatch:
    """A batch ready for one stage: normalised ``latents [B, K·d, L]`` and ``vocal_features [B, K·d, L]``,
    ``frame_mask [B, L]``, encoded ``text``; ``target`` and ``clean_prefix`` are the stage's views of ``latents``."""

    latents: torch.Tensor
    vocal_features: torch.Tensor
    frame_mask: torch.Tensor
    text: TextCondition
    stage: str
    primary_channels: int

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def target(self) -> torch.Tensor:
        """What the stage learns: the primary ``[B, P·d, L]`` (all of ``latents`` for a flat model) or the secondary
        ``[B, (K−P)·d, L]``."""
        if self.primary_channels == self.latents.shape[1]:
            return self.latents
        primary, secondary = split_latents(self.latents, self.primary_channels)
        return primary if self.stage == "primary" else secondary

    @property
    def clean_prefix(self) -> torch.Tensor | None:
        """What the stage is given: the true primary for the secondary stage, None for the primary stage."""
        return None if self.stage == "primary" else self.latents[:, : self.primary_channels]

    def replace_target(self, generated: torch.Tensor) -> torch.Tensor:
        """``latents`` with the stage's channels replaced by ``generated`` (same shape as :attr:`target`)."""
        if self.primary_channels == self.latents.shape[1]:
            return generated
        primary, secondary = split_latents(self.latents, self.primary_channels)
        return merge_latents(generated, secondary) if self.stage == "primary" else merge_latents(primary, generated)


class StageObjective:
    """Per-sample v-loss of one stage: prepares dataset batches (normalise, split, encode text) and draws
    ``t``, condition dropout and noise from the generator it is given."""

    def __init__(self, pipeline: DiscoDiffPipeline, stage: str, text_dropout: float, vocal_dropout: float, loss: str = "l1"):
        self.pipeline, self.stage, self.loss = pipeline, stage, loss
        self.text_encoder = pipeline.text_encoder
        self.primary_channels = pipeline.primary_channels
        self.latent_channels = pipeline.codec.latent_channels
        self.text_dropout, self.vocal_dropout = text_dropout, vocal_dropout

    @property
    def latent_stats(self) -> LatentStats:
        """The pipeline's statistics (the training data's, once the task has read them)."""
        return self.pipeline.latent_stats

    @torch.no_grad()
    def prepare(self, batch: dict, device: torch.device) -> StageBatch:
        """A dataset batch (see :mod:`discodiff.training.data`) → :class:`StageBatch` on ``device``. The text comes from
        the batch's cached encoder outputs when it has them, else from the frozen text encoder."""
        self._check(batch)
        latents = self.latent_stats.normalize(batch["latents"].to(device, torch.float32))
        vocal = self.latent_stats.normalize(batch["vocal_latents"].to(device, torch.float32))
        if "text_sequence" in batch:
            text = TextCondition(batch["text_sequence"], batch["text_mask"], batch["text_pooled"]).to(device)
        else:
            text = self.text_encoder(list(batch["captions"]), device=device)
        return StageBatch(latents, vocal, batch["frame_mask"].to(device), text, self.stage, self.primary_channels)

    def __call__(
        self,
        model: nn.Module,
        batch: StageBatch,
        generator: torch.Generator,
        t: torch.Tensor | None = None,
        drop_conditions: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [B], t [B])``. Draws, in order, ``t`` (unless given), the text and vocal dropout masks
        (all False with ``drop_conditions=False``) and the noise, all from ``generator``."""
        size, device = batch.batch_size, batch.target.device
        t = sample_timesteps(size, generator, device) if t is None else t
        if drop_conditions:
            text_dropped = condition_dropout(size, self.text_dropout, generator, device)
            vocal_dropped = condition_dropout(size, self.vocal_dropout, generator, device)
        else:
            text_dropped = vocal_dropped = torch.zeros(size, dtype=torch.bool, device=device)

        def denoise(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return model(sample, timestep, batch.text, batch.vocal_features, batch.frame_mask, text_dropped, vocal_dropped)

        loss = v_diffusion_loss(denoise, batch.target, generator, kind=self.loss, mask=batch.frame_mask[:, None],
                                clean_prefix=batch.clean_prefix, t=t)
        return loss, t

    def _check(self, batch: dict) -> None:
        check_batch_keys(batch, BATCH_KEYS, "the diffusion stage task")
        latents, vocal, mask = batch["latents"], batch["vocal_latents"], batch["frame_mask"]
        if latents.ndim != 3 or latents.shape[1] != self.latent_channels:
            raise DataError(f"batch latents must be [B, {self.latent_channels}, L] for this model's codec, "
                             f"got {tuple(latents.shape)}; prepare the data with the model's codec")
        if vocal.shape != latents.shape or mask.shape != (latents.shape[0], latents.shape[2]) or mask.dtype != torch.bool:
            raise DataError(f"vocal_latents {tuple(vocal.shape)} must equal latents {tuple(latents.shape)} and frame_mask "
                             f"must be bool [B, L], got {mask.dtype} {tuple(mask.shape)}")
