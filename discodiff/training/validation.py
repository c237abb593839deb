"""Validation and audio samples of the diffusion stage task: the v-loss at fixed diffusion times with fixed noise,
and samples through the family's one guided denoiser (:func:`~discodiff.diffusion.conditioned_denoiser`).

Both run on every process (so they also work when the model is sharded) and draw their randomness from
fresh generators seeded by the run seed: the same validation noise at every evaluation, and no effect on the
training generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from accelerate import Accelerator
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader

from discodiff.diffusion import conditioned_denoiser, sample
from discodiff.pipeline import DiscoDiffPipeline, unet_call

from .stage import StageBatch, StageModel, StageObjective
from .state import process_seed


@torch.no_grad()
def validation_loss(accelerator: Accelerator, model: nn.Module, objective: StageObjective, dataloader: DataLoader,
                    times: Sequence[float], seed: int) -> dict[str, float]:
    """``val/loss_t<t>`` per fixed time and their mean ``val/loss``, over every validation item, nothing dropped."""
    generator = torch.Generator().manual_seed(process_seed(seed, accelerator.process_index))
    losses: dict[float, list[torch.Tensor]] = {t: [] for t in times}
    for batch in dataloader:
        stage_batch = objective.prepare(batch, accelerator.device)
        for t in times:
            fixed_t = torch.full((stage_batch.batch_size,), t, device=accelerator.device)
            loss, _ = objective(model, stage_batch, generator, t=fixed_t, drop_conditions=False)
            losses[t].append(accelerator.gather_for_metrics(loss))
    metrics = {f"val/loss_t{t:g}": torch.cat(values).mean().item() for t, values in losses.items()}
    metrics["val/loss"] = sum(metrics.values()) / len(metrics)
    return metrics


@torch.no_grad()
def generate_samples(model: StageModel, pipeline: DiscoDiffPipeline, batch: StageBatch, num_inference_steps: int,
                     text_guidance: float, vocal_guidance: float, seed: int,
                     autocast: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """Audio ``[B, 1, T]`` with this stage generated and the other stage's latents taken from ``batch``
    (the primary is heard over the true detail; the secondary is generated over the true primary).

    ``model`` is the unwrapped :class:`StageModel` (``accelerator.unwrap_model``). Its conditions (text and this
    stage's vocal tokens) are built once and guided as in the pipeline; sample ``i`` draws from a generator seeded
    ``seed + i``. The networks run within ``autocast()`` (``accelerator.autocast``: the run's mixed precision), the
    sampler and the decoder in float32.
    """
    if isinstance(model, FSDPModule):
        model.unshard()  # the root's own parameters (vocal encoder, U-Net stem); the levels unshard themselves
    with autocast():
        conditions = model.conditions(batch.text, batch.vocal_features, batch.frame_mask)
    scales = [text_guidance, vocal_guidance] if model.vocal_encoder is not None else [text_guidance]
    guided = conditioned_denoiser(unet_call(model.unet), conditions, scales, batch.clean_prefix)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast():
            return guided(x, t).float()

    generators = [torch.Generator().manual_seed(seed + i) for i in range(batch.batch_size)]
    generated = sample(denoise, batch.target.shape, pipeline.scheduler, num_inference_steps, generators,
                       batch.latents.device, progress=False)
    return decode(pipeline, batch.replace_target(generated))


@torch.no_grad()
def decode(pipeline: DiscoDiffPipeline, normalised_latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``[B, K·d, L]`` → audio ``[B, 1, L·hop]`` (denormalise, snap, decode)."""
    return pipeline.codec.decode_latents(pipeline.latent_stats.denormalize(normalised_latents), progress=False)
