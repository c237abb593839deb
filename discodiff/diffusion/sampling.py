"""Sampling a v-prediction model with diffusers schedulers.

Our model is variance preserving in continuous time: ``x_t = α·x0 + σ·ε`` with ``α = cos(πt/2)``,
``σ = sin(πt/2)``. A diffusers scheduler describes the noise level of each step either by ``ᾱ = α²``
(DDIM) or by the variance-exploding sigma ``σ_ve = σ / α = tan(πt/2)`` (``scheduler.sigmas``; for
DDIM ``σ_ve = sqrt((1 − ᾱ) / ᾱ)``). So at every step the model gets

- ``t = (2/π)·atan(σ_ve)`` — for ``CosineDPMSolverMultistepScheduler`` this is exactly its own
  ``precondition_noise``, i.e. its ``timesteps``;
- ``scheduler.scale_model_input(x, timestep)``, which is the VP sample ``x_ve / sqrt(1 + σ_ve²)``:
  Euler and CosineDPM (``sigma_data = 1``) carry the VE sample and divide by ``sqrt(σ_ve² + 1)``;
  DDIM and DPM-Solver++ carry the VP sample already and return it unchanged.

Scheduler choices (``make_scheduler`` defaults; every sampler ends at ``σ_ve = 0``, i.e. ``t = 0``):

- ``cosine-dpm``: exponential (log-uniform) sigmas from ``sigma_max = 500`` (``t ≈ 0.9987``) down to
  ``sigma_min = 0.01`` (``t ≈ 0.0064``), then a last step to 0. Stable Audio's 0.3 would stop at
  ``t ≈ 0.19``, too coarse for codec latents that are snapped to codebooks afterwards.
  Stochastic (SDE-DPM-Solver++); needs the ``torchsde`` package.
- ``ddim``, ``dpm++``, ``euler``: the ``squaredcos_cap_v2`` discrete schedule (1000 steps), whose
  ``ᾱ`` spans ``t ∈ [0.004, 0.99997]``, so the first step is (almost) pure noise. DDIM uses
  ``trailing`` spacing (starts at the last training step; its final step goes to ``ᾱ = 1``);
  DPM-Solver++ uses ``trailing`` spacing with diffusers' recommended ``lambda_min_clipped = -5.1``
  for this schedule (starts at ``t ≈ 0.996``), then a final step to ``σ_ve = 0``; Euler uses
  ``linspace`` spacing (first step at the last training step, last model call at ``t ≈ 0.004``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from diffusers import (
    CosineDPMSolverMultistepScheduler,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import is_torchsde_available
from tqdm.auto import tqdm

from ..errors import GenerationError
from ..guidance import Generators, draw_normal
from .objective import Denoiser

SCHEDULER_DEFAULTS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "cosine-dpm": (
        CosineDPMSolverMultistepScheduler,
        dict(sigma_min=0.01, sigma_max=500.0, sigma_data=1.0, sigma_schedule="exponential", prediction_type="v_prediction"),
    ),
    "ddim": (
        DDIMScheduler,
        dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False, timestep_spacing="trailing"),
    ),
    "dpm++": (
        DPMSolverMultistepScheduler,
        dict(
            beta_schedule="squaredcos_cap_v2",
            prediction_type="v_prediction",
            algorithm_type="dpmsolver++",
            timestep_spacing="trailing",
            lambda_min_clipped=-5.1,
        ),
    ),
    "euler": (
        EulerDiscreteScheduler,
        dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="linspace"),
    ),
}
SCHEDULERS = tuple(SCHEDULER_DEFAULTS)
DEFAULT_SCHEDULER = "cosine-dpm"


def make_scheduler(name: str = DEFAULT_SCHEDULER, **overrides) -> SchedulerMixin:
    """A v-prediction scheduler by name (one of :data:`SCHEDULERS`); ``overrides`` replace config defaults."""
    if name not in SCHEDULER_DEFAULTS:
        raise ValueError(f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
    if name == "cosine-dpm" and not is_torchsde_available():
        others = ", ".join(n for n in SCHEDULERS if n != name)
        raise ImportError(f"scheduler 'cosine-dpm' needs the torchsde package: `pip install torchsde`, or choose one of {others}")
    scheduler_class, defaults = SCHEDULER_DEFAULTS[name]
    return scheduler_class(**{**defaults, **overrides})


def _check_compatible(scheduler: SchedulerMixin) -> None:
    supported = tuple(scheduler_class for scheduler_class, _ in SCHEDULER_DEFAULTS.values())
    if not isinstance(scheduler, supported):
        names = ", ".join(c.__name__ for c in supported)
        raise TypeError(f"{type(scheduler).__name__} is not supported; use one of {names} (make_scheduler builds them)")
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(
            f"the model predicts v; configure the scheduler with prediction_type='v_prediction', "
            f"not '{scheduler.config.prediction_type}'"
        )
    if isinstance(scheduler, CosineDPMSolverMultistepScheduler) and scheduler.config.sigma_data != 1.0:
        raise ValueError(f"sigma_data must be 1.0 for a variance-preserving model input, got {scheduler.config.sigma_data}")


def check_num_steps(scheduler: SchedulerMixin, num_inference_steps) -> int:
    """``num_inference_steps`` as an int, or :class:`GenerationError` naming the valid range.

    diffusers does not check: 0 divides by zero (DDIM, DPM-Solver++) or returns no steps (Euler, CosineDPM),
    a negative count returns the noise unchanged, and the discrete schedulers cannot take more steps than
    their training schedule has (DDIM raises, DPM-Solver++ silently drops repeated timesteps).
    """
    discrete = not isinstance(scheduler, CosineDPMSolverMultistepScheduler)
    limit = int(scheduler.config.num_train_timesteps) if discrete else None
    valid = f"1 … {limit} for {type(scheduler).__name__}" if limit else "at least 1"
    if not isinstance(num_inference_steps, numbers.Integral) or isinstance(num_inference_steps, bool):
        raise GenerationError(f"num_inference_steps must be a whole number ({valid}), got {num_inference_steps!r}")
    if num_inference_steps < 1 or (limit is not None and num_inference_steps > limit):
        raise GenerationError(f"num_inference_steps={num_inference_steps} is out of range: use {valid}")
    return int(num_inference_steps)


def ve_sigma(scheduler: SchedulerMixin, step_index: int) -> float:
    """Variance-exploding noise level ``σ_ve = σ / α`` of step ``step_index`` (after ``set_timesteps``)."""
    if isinstance(scheduler, DDIMScheduler):
        alpha_bar = scheduler.alphas_cumprod[int(scheduler.timesteps[step_index])].double()
        return ((1 - alpha_bar) / alpha_bar).sqrt().item()
    return scheduler.sigmas[step_index].item()


def ve_sigma_to_time(sigma: float) -> float:
    """``σ_ve → t = (2/π)·atan(σ_ve)``, the inverse of ``σ_ve = tan(πt/2)``."""
    return math.atan(sigma) * 2 / math.pi


def step_time(scheduler: SchedulerMixin, step_index: int) -> float:
    """Our continuous ``t ∈ [0, 1]`` for step ``step_index`` of a scheduler (after ``set_timesteps``)."""
    return ve_sigma_to_time(ve_sigma(scheduler, step_index))


@torch.no_grad()
def sample(
    denoise: Denoiser,
    shape: Sequence[int],
    scheduler: SchedulerMixin,
    num_inference_steps: int,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    initial_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate from noise to a clean sample of ``shape = [B, C, L]``.

    ``denoise(x_t [B, C, L], t [B] float32) → v [B, C, L]`` gets the VP sample. The initial noise is
    drawn from ``generator`` (one, or a list with one per sample) unless ``initial_noise`` (standard
    normal, ``shape``) is given. ``scheduler`` is left untouched: each call steps a fresh copy, so calls
    are reentrant and equal generators give equal samples. ``num_inference_steps`` must be at least 1 (and at
    most the training schedule's length for the discrete schedulers; see :func:`check_num_steps`).
    """
    _check_compatible(scheduler)
    num_inference_steps = check_num_steps(scheduler, num_inference_steps)
    generator = list(generator) if isinstance(generator, Sequence) else generator  # diffusers wants a list
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    if initial_noise is None:
        noise = draw_normal(shape, generator, device, dtype)
    elif tuple(initial_noise.shape) != tuple(shape):
        raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}, expected {tuple(shape)}")
    else:
        noise = initial_noise.to(device=device, dtype=dtype)
    x = noise * scheduler.init_noise_sigma
    for step_index, timestep in enumerate(tqdm(scheduler.timesteps, desc="sampling", disable=not progress)):
        t = torch.full((x.shape[0],), step_time(scheduler, step_index), device=x.device)
        v = denoise(scheduler.scale_model_input(x, timestep), t)
        if v.shape != x.shape:
            raise ValueError(f"denoise returned shape {tuple(v.shape)}; it must predict v of the sample's shape {tuple(x.shape)}")
        x = scheduler.step(v, timestep, x, generator=generator).prev_sample
    return x
