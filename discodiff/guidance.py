"""Conditions and classifier-free guidance shared by every model family (diffusion today, AR next).

- :class:`Conditions`: per-sample conditions in a model's context order (e.g. text, then vocal): token
  sequences, their masks and a pooled vector, with their batch repetition for guidance.
- Guidance over nested conditions in one batched forward. Contexts are ordered ``c_1 … c_K``; stage
  ``j ∈ 0 … K`` keeps the first ``j`` and drops the rest (stage 0 unconditional, stage ``K`` fully
  conditional). With stage predictions ``v_0 … v_K`` and scales ``s_1 … s_K``:
  ``v = v_0 + Σ_k s_k·(v_k − v_{k−1})``, e.g. ``v_∅ + s_text·(v_text − v_∅) + s_vocal·(v_full − v_text)``.
  The batched layout is stage-major: row ``j·B + b`` is sample ``b`` at stage ``j``; drop masks are bool,
  True = the model replaces that sample's context by its learned null.
- Per-sample condition dropout for training, and the generator helpers every family draws its
  randomness with (a single ``torch.Generator`` or one per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class Conditions:
    """Per-sample conditions in a model's context order: ``contexts[k] [B, S_k, D_k]`` (None = the learned null
    for every sample), their ``masks[k] [B, S_k]`` bool (True = valid token) and ``pooled [B, P]`` (or None)."""

    contexts: list[torch.Tensor | None]
    masks: list[torch.Tensor | None]
    pooled: torch.Tensor | None

    def repeated(self, copies: int) -> Conditions:
        """Each tensor repeated ``copies`` times along the batch, copy-major (for batched guidance)."""
        return Conditions([repeat_batch(c, copies) for c in self.contexts], [repeat_batch(m, copies) for m in self.masks],
                          repeat_batch(self.pooled, copies))


def repeat_batch(x: torch.Tensor | None, copies: int) -> torch.Tensor | None:
    """``[B, …]`` → ``[copies·B, …]`` (copy-major: the layout of guidance stages); None stays None."""
    return x if x is None or copies == 1 else torch.cat([x] * copies)


def guidance_drop_masks(batch_size: int, num_contexts: int, device: torch.device | str | None = None) -> list[torch.Tensor]:
    """One bool mask ``[(K+1)·B]`` per context; context ``k`` (0-based) is dropped in stages ``0 … k``."""
    stage = torch.arange(num_contexts + 1, device=device).repeat_interleave(batch_size)
    return [stage <= k for k in range(num_contexts)]


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


def condition_dropout(
    batch_size: int, p: float, generator: Generators = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``[B]`` bool, True = drop this sample's condition; independent Bernoulli(``p``) per sample."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    return draw_uniform(batch_size, generator, device) < p


def check_generators(generator: Generators, batch_size: int) -> None:
    if isinstance(generator, Sequence) and len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}; pass one per sample or a single one")


def draw_normal(
    shape: Sequence[int], generator: Generators = None, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Standard normal noise of ``shape``; with a list of generators, sample ``i`` comes from ``generator[i]``."""
    check_generators(generator, shape[0])
    generator = list(generator) if isinstance(generator, Sequence) else generator
    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device or "cpu"), dtype=dtype)


def draw_uniform(batch_size: int, generator: Generators = None, device: torch.device | str | None = None) -> torch.Tensor:
    """``[B]`` float32 uniform in [0, 1); with a list of generators, entry ``i`` comes from ``generator[i]``."""
    check_generators(generator, batch_size)
    if isinstance(generator, Sequence):
        draws = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generator])
    else:
        draws = torch.rand(batch_size, generator=generator, device=device if generator is None else generator.device)
    return draws.to(device)
