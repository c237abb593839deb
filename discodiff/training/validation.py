"""Validation during training: the v-loss at fixed diffusion times with fixed noise, and audio samples.

Both run the prepared stage model on every process (so they also work when it is sharded) and draw
their randomness from fresh generators seeded by the run seed: the same validation noise at every
evaluation, and no effect on the training generators.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from discodiff.conditioning import TextCondition
from discodiff.diffusion import guided_denoiser, sample
from discodiff.guidance import repeat_batch
from discodiff.pipeline import DiscoDiffPipeline

from .stage import StageBatch, StageObjective
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
def generate_samples(model: nn.Module, pipeline: DiscoDiffPipeline, batch: StageBatch, num_inference_steps: int,
                     text_guidance: float, vocal_guidance: float, seed: int) -> torch.Tensor:
    """Audio ``[B, 1, T]`` with this stage generated and the other stage's latents taken from ``batch``
    (the primary is heard over the true detail; the secondary is generated over the true primary).

    Sample ``i`` draws from a generator seeded ``seed + i``. Guidance is batched as in the pipeline.
    """
    size = batch.batch_size

    def guided_model(x: torch.Tensor, t: torch.Tensor, dropped: Sequence[torch.Tensor]) -> torch.Tensor:
        copies = x.shape[0] // size
        if batch.clean_prefix is not None:
            x = torch.cat([repeat_batch(batch.clean_prefix, copies), x], dim=1)
        text = TextCondition(*(repeat_batch(v, copies) for v in (batch.text.sequence, batch.text.mask, batch.text.pooled)))
        none_dropped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        text_dropped, vocal_dropped = (list(dropped) + [none_dropped, none_dropped])[:2]
        return model(x, t, text, repeat_batch(batch.vocal_features, copies), repeat_batch(batch.frame_mask, copies),
                     text_dropped, vocal_dropped)

    scales = [text_guidance, vocal_guidance] if pipeline.has_vocal_encoder else [text_guidance]
    generators = [torch.Generator().manual_seed(seed + i) for i in range(size)]
    generated = sample(guided_denoiser(guided_model, scales), batch.target.shape, pipeline.scheduler, num_inference_steps,
                       generators, batch.latents.device, progress=False)
    return decode(pipeline, batch.replace_target(generated))


@torch.no_grad()
def decode(pipeline: DiscoDiffPipeline, normalised_latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``[B, K·d, L]`` → audio ``[B, 1, L·hop]`` (denormalise, snap, decode)."""
    return pipeline.codec.decode_latents(pipeline.latent_stats.denormalize(normalised_latents), progress=False)
