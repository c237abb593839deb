"""Compositional classifier-free guidance over nested conditions, in one batched forward.

Contexts are ordered ``c_1 … c_K`` (e.g. text, then vocal). Stage ``j ∈ 0 … K`` keeps the first ``j``
contexts and drops the rest: stage 0 is unconditional, stage ``K`` fully conditional. With stage
predictions ``v_0 … v_K`` and scales ``s_1 … s_K``

    v = v_0 + Σ_k s_k·(v_k − v_{k−1})

e.g. ``v = v_∅ + s_text·(v_text − v_∅) + s_vocal·(v_full − v_text)``, or with one context the usual
``v_∅ + s·(v_cond − v_∅)``. The batched layout is stage-major: row ``j·B + b`` is sample ``b`` at
stage ``j``. Masks are bool with True = drop (the model replaces those samples' context by its null).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .objective import Denoiser

GuidableModel = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]


def guidance_drop_masks(batch_size: int, num_contexts: int, device: torch.device | str | None = None) -> list[torch.Tensor]:
    """One bool mask ``[(K+1)·B]`` per context; context ``k`` (0-based) is dropped in stages ``0 … k``."""
    stage = torch.arange(num_contexts + 1, device=device).repeat_interleave(batch_size)
    return [stage <= k for k in range(num_contexts)]


def stack_for_guidance(x: torch.Tensor, num_contexts: int) -> torch.Tensor:
    """``[B, …] → [(K+1)·B, …]``: one copy per stage, stage-major (for model inputs and conditions)."""
    return torch.cat([x] * (num_contexts + 1))


def split_stages(output: torch.Tensor, num_contexts: int) -> list[torch.Tensor]:
    """``[(K+1)·B, …]`` → ``K+1`` tensors ``[B, …]``, stage 0 (unconditional) first."""
    if output.shape[0] % (num_contexts + 1):
        raise ValueError(f"batched output has {output.shape[0]} rows, not a multiple of {num_contexts + 1} stages")
    return list(output.chunk(num_contexts + 1))


def guided_prediction(predictions: Sequence[torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """Combine stage predictions ``[v_0 … v_K]`` with scales ``[s_1 … s_K]``.

    Computed around the fully conditional ``v_K`` (``v_K + Σ_k (s_k − 1)·(v_k − v_{k−1})``), so with
    every scale 1 the result is exactly ``v_K``.
    """
    if len(predictions) != len(scales) + 1:
        raise ValueError(f"need one more prediction than scales (unconditional first), got {len(predictions)} and {len(scales)}")
    guided = predictions[-1]
    for scale, conditional, less_conditional in zip(scales, predictions[1:], predictions[:-1]):
        if scale != 1:
            guided = guided + (scale - 1) * (conditional - less_conditional)
    return guided


def guided_denoiser(model: GuidableModel, scales: Sequence[float]) -> Denoiser:
    """Turn ``model(x [N, C, L], t [N], condition_dropped) → v`` into a guided ``denoise(x, t) → v``.

    Each call runs the model once on ``N = (K+1)·B`` stage-major rows with :func:`guidance_drop_masks`
    (one per context, ``K = len(scales)``); the model stacks its own per-sample conditions the same way
    with :func:`stack_for_guidance`. When every scale is 1, calling the model directly on ``B`` rows
    with nothing dropped gives the same result at ``1/(K+1)`` of the cost.
    """
    num_contexts = len(scales)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        drop_masks = guidance_drop_masks(x.shape[0], num_contexts, x.device)
        output = model(stack_for_guidance(x, num_contexts), stack_for_guidance(t, num_contexts), drop_masks)
        return guided_prediction(split_stages(output, num_contexts), scales)

    return denoise
