"""Inpainting with a v-prediction denoiser: generate a window whose first frames are given.

Long-form generation (:mod:`discodiff.long_form`) makes each window after the first with its overlap already
known. :func:`inpainting_denoiser` wraps a denoiser so that, in the known frames, its prediction is replaced by the
``v`` that denoises ``x_t`` exactly to the known clean latents: from ``x0 = α·x_t − σ·v``,
``v_known = (α·x_t − x0_known) / σ``. Every scheduler then moves the known frames along the trajectory
``α_t·x0_known + σ_t·ε`` of their own initial noise ε (the replacement method of inpainting, applied to the
prediction rather than the sample, so it works for every sampler of :mod:`discodiff.diffusion.sampling`, whichever
parametrisation it carries), while the model sees those frames, at the noise level of the step, as the context of
the frames it generates.
"""

from __future__ import annotations

import torch

from .objective import Denoiser, _per_sample

MIN_SIGMA = 1e-6  # the known-frame prediction divides by σ; the last steps of some samplers come within 1e-3 of 0


def inpainting_denoiser(denoise: Denoiser, known: torch.Tensor) -> Denoiser:
    """``denoise`` with the first ``P`` frames of every sample fixed to ``known [B, C, P]`` (clean latents in the
    model's normalisation); ``P = 0`` returns ``denoise`` itself."""
    num_known = known.shape[-1]
    if num_known == 0:
        return denoise

    def call(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[:2] != known.shape[:2] or x_t.shape[-1] <= num_known:
            raise ValueError(f"a window {tuple(x_t.shape)} must match the known frames {tuple(known.shape)} in batch and "
                             "channels and be longer than them")
        v = denoise(x_t, t)
        alpha, sigma = _per_sample(t, x_t)
        head = x_t[..., :num_known]
        v_known = (alpha * head - known.to(x_t.dtype)) / sigma.clamp_min(MIN_SIGMA)
        return torch.cat([v_known, v[..., num_known:]], dim=-1)

    return call
