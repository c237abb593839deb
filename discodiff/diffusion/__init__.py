"""The v-objective (noising, targets, loss), guided denoisers and sampling with diffusers schedulers.

Guidance math, condition dropout and generator helpers shared with other families live in
:mod:`discodiff.guidance`.
"""

from .guidance import conditioned_denoiser, guided_denoiser
from .objective import (
    LOSS_KINDS,
    add_noise,
    alpha_sigma,
    predict_noise,
    predict_x0,
    sample_timesteps,
    v_diffusion_loss,
    v_loss,
    v_target,
)
from .sampling import DEFAULT_SCHEDULER, SCHEDULERS, make_scheduler, sample, step_time, ve_sigma, ve_sigma_to_time

__all__ = [
    "DEFAULT_SCHEDULER",
    "LOSS_KINDS",
    "SCHEDULERS",
    "add_noise",
    "alpha_sigma",
    "conditioned_denoiser",
    "guided_denoiser",
    "make_scheduler",
    "predict_noise",
    "predict_x0",
    "sample",
    "sample_timesteps",
    "step_time",
    "v_diffusion_loss",
    "v_loss",
    "v_target",
    "ve_sigma",
    "ve_sigma_to_time",
]
