"""The v-objective (noising, targets, loss, condition dropout), CFG and sampling with diffusers schedulers."""

from .guidance import guidance_drop_masks, guided_denoiser, guided_prediction, split_stages, stack_for_guidance
from .objective import (
    LOSS_KINDS,
    add_noise,
    alpha_sigma,
    condition_dropout,
    draw_normal,
    draw_uniform,
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
    "condition_dropout",
    "draw_normal",
    "draw_uniform",
    "guidance_drop_masks",
    "guided_denoiser",
    "guided_prediction",
    "make_scheduler",
    "predict_noise",
    "predict_x0",
    "sample",
    "sample_timesteps",
    "split_stages",
    "stack_for_guidance",
    "step_time",
    "v_diffusion_loss",
    "v_loss",
    "v_target",
    "ve_sigma",
    "ve_sigma_to_time",
]
