"""Continuous-time cosine v-diffusion: noising, v targets, the training loss.

Time ``t ∈ [0, 1]`` with ``α = cos(πt/2)``, ``σ = sin(πt/2)`` (variance preserving, ``α² + σ² = 1``):
``x_t = α·x0 + σ·ε`` and the model predicts ``v = α·ε − σ·x0``. Tensors are ``[B, C, L]``; ``t`` is
``[B]`` float. All randomness comes from the ``torch.Generator`` (or list of them, one per sample)
passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..guidance import Generators, draw_normal, draw_uniform

LOSS_KINDS = ("l1", "l2")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` (any shape) → ``(α, σ) = (cos(πt/2), sin(πt/2))``."""
    angle = t * (math.pi / 2)
    return angle.cos(), angle.sin()


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``t [B]`` → ``(α, σ)`` shaped ``[B, 1, …]`` to broadcast over ``like [B, …]``."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must be [B] = [{like.shape[0]}] for a tensor of shape {tuple(like.shape)}, got {tuple(t.shape)}")
    alpha, sigma = alpha_sigma(t.to(like.dtype))
    view = (-1,) + (1,) * (like.ndim - 1)
    return alpha.view(view), sigma.view(view)


def sample_timesteps(batch_size: int, generator: Generators = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Training times ``t ~ U(0, 1)``: ``[B]`` float32."""
    return draw_uniform(batch_size, generator, device)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = α·x0 + σ·ε`` for ``x0, noise [B, …]`` and ``t [B]``."""
    alpha, sigma = _per_sample(t, x0)
    return alpha * x0 + sigma * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``v = α·ε − σ·x0`` for ``x0, noise [B, …]`` and ``t [B]``."""
    alpha, sigma = _per_sample(t, x0)
    return alpha * noise - sigma * x0


def predict_x0(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean sample from a v prediction: ``x0 = α·x_t − σ·v``."""
    alpha, sigma = _per_sample(t, x_t)
    return alpha * x_t - sigma * v


def predict_noise(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise from a v prediction: ``ε = σ·x_t + α·v``."""
    alpha, sigma = _per_sample(t, x_t)
    return sigma * x_t + alpha * v


def v_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample loss ``[B]``: mean L1 / L2 error over all non-batch dims.

    ``mask`` (``[B, 1 or C, L]``, bool or float weights) keeps only the marked elements, e.g. to skip
    padded frames; each sample is averaged over its own kept elements (an all-masked sample gives 0).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have the same shape")
    if kind == "l1":
        error = (prediction - target).abs()
    elif kind == "l2":
        error = (prediction - target).square()
    else:
        raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got '{kind}'")
    dims = tuple(range(1, error.ndim))
    if mask is None:
        return error.mean(dim=dims)
    try:
        weights = mask.to(error.dtype).expand_as(error)
    except RuntimeError as e:
        raise ValueError(f"mask {tuple(mask.shape)} must broadcast to the prediction {tuple(error.shape)}, e.g. [B, 1, L]") from e
    return (error * weights).sum(dim=dims) / weights.sum(dim=dims).clamp_min(torch.finfo(error.dtype).tiny)


def v_diffusion_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    generator: Generators = None,
    *,
    kind: str = "l1",
    mask: torch.Tensor | None = None,
    clean_prefix: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """One training step's per-sample v loss ``[B]`` for ``x0 [B, C, L]``.

    Draws ``t ~ U(0, 1)`` (unless ``t [B]`` is given, e.g. a fixed grid for validation) and ``ε``,
    then calls ``denoiser(model_input, t) → v [B, C, L]``. The model input is ``x_t``, or
    ``cat([clean_prefix, x_t], dim=1)`` when ``clean_prefix [B, C', L]`` is given: the secondary model
    sees the clean primary latents and predicts v for the noisy channels only.
    """
    batch_size = x0.shape[0]
    if t is None:
        t = sample_timesteps(batch_size, generator, x0.device)
    noise = draw_normal(x0.shape, generator, x0.device, x0.dtype)
    x_t = add_noise(x0, noise, t)
    if clean_prefix is not None:
        if clean_prefix.shape[0] != batch_size or clean_prefix.shape[2:] != x0.shape[2:]:
            raise ValueError(f"clean_prefix {tuple(clean_prefix.shape)} must match x0 {tuple(x0.shape)} in batch and length")
        x_t = torch.cat([clean_prefix.to(x_t.dtype), x_t], dim=1)
    prediction = denoiser(x_t, t)
    return v_loss(prediction, v_target(x0, noise, t), kind, mask)
