"""Classifier-free guidance for denoisers: the guided combination of stage predictions in one batched forward
(the math and the condition type live in :mod:`discodiff.guidance`, shared with other families)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..guidance import Conditions, guidance_drop_masks, guided_prediction, repeat_batch, split_stages
from .objective import Denoiser

GuidableModel = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]
UNetCall = Callable[[torch.Tensor, torch.Tensor, Conditions, list[torch.Tensor | None]], torch.Tensor]


def guided_denoiser(model: GuidableModel, scales: Sequence[float]) -> Denoiser:
    """Turn ``model(x [N, C, L], t [N], condition_dropped) → v`` into a guided ``denoise(x, t) → v``.

    Each call runs the model once on ``N = (K+1)·B`` stage-major rows with :func:`guidance_drop_masks`
    (one per context, ``K = len(scales)``); the model stacks its own per-sample conditions the same way
    with :func:`~discodiff.guidance.repeat_batch`. When every scale is 1, calling the model directly on ``B`` rows
    with nothing dropped gives the same result at ``1/(K+1)`` of the cost.
    """
    num_contexts = len(scales)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        drop_masks = guidance_drop_masks(x.shape[0], num_contexts, x.device)
        output = model(repeat_batch(x, num_contexts + 1), repeat_batch(t, num_contexts + 1), drop_masks)
        return guided_prediction(split_stages(output, num_contexts), scales)

    return denoise


def conditioned_denoiser(unet: UNetCall, conditions: Conditions, scales: Sequence[float],
                         clean_prefix: torch.Tensor | None = None) -> Denoiser:
    """``denoise(x [B, C, L], t [B]) → v`` for a conditioned network, guided over the first ``len(scales)`` contexts.

    ``unet(x, t, conditions, dropped)`` is the network on already repeated conditions with per-context drop
    masks (None = nothing dropped). ``clean_prefix [B, C', L]`` (the primary, for the secondary U-Net) is
    concatenated before the noisy input. With every scale 1 the fully conditional network runs alone.
    The one guided path of the diffusion family: the pipeline and training samples both use it.
    """
    def model(x: torch.Tensor, t: torch.Tensor, dropped: Sequence[torch.Tensor]) -> torch.Tensor:
        copies = x.shape[0] // clean_rows
        repeated = conditions.repeated(copies)
        if clean_prefix is not None:
            x = torch.cat([repeat_batch(clean_prefix, copies), x], dim=1)
        return unet(x, t, repeated, list(dropped) + [None] * (len(repeated.contexts) - len(dropped)))

    clean_rows = _batch_size(conditions)
    if all(scale == 1 for scale in scales):
        return lambda x, t: model(x, t, [])
    return guided_denoiser(model, scales)


def _batch_size(conditions: Conditions) -> int:
    for tensor in (*conditions.contexts, conditions.pooled):
        if tensor is not None:
            return tensor.shape[0]
    raise ValueError("conditions hold no tensor to take the batch size from")
