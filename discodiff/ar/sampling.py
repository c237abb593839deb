"""Sampling one AR stage, step by step, with batched classifier-free guidance and a preallocated KV cache.

Guidance reuses the shared combination (:mod:`discodiff.guidance`): the conditions are ordered (text, vocal); the
``(n+1)·B`` rows of one forward are stage-major, row block ``j`` keeping the first ``j`` conditions
(:func:`~discodiff.guidance.guidance_drop_masks`); a dropped text is an all-False context mask (no cross-attention),
a dropped vocal is its streams' learned null. The per-block log-probabilities are combined by
:func:`~discodiff.guidance.guided_prediction` (with every scale 1 the conditional rows run alone, and the result is
exactly the conditional model's). Then temperature, top-k and top-p (``transformers``' logits warpers) and one
multinomial draw per row, from that sample's own generator when a list is given.

With ``use_cache=False`` every step recomputes the whole prefix: the reference the cache is checked against (the
same tokens under the same generator) and the slow side of the cache speed-up benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ..errors import GenerationError
from ..guidance import Generators, check_generators, guidance_drop_masks, guided_prediction, repeat_batch, split_stages
from .patterns import DelayPattern
from .stages import StageSpec
from .transformer import ARTransformer


@dataclass(frozen=True)
class SamplingSettings:
    """Temperature (> 0), top-k (0 = off) and top-p (1 = off) of every draw."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores [N, V]`` (log-probabilities) → the warped scores a draw samples from (filtered ids at −inf)."""
        if self.temperature != 1.0:
            scores = TemperatureLogitsWarper(self.temperature)(None, scores)
        if 0 < self.top_k < scores.shape[-1]:
            scores = TopKLogitsWarper(self.top_k)(None, scores)
        if self.top_p < 1.0:
            scores = TopPLogitsWarper(self.top_p)(None, scores)
        return scores


def draw(scores: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One id per row of ``scores [B, N, V]`` → ``[B, N]``; sample ``b``'s rows from ``generator[b]`` when it is a list."""
    probabilities = torch.softmax(scores.float(), dim=-1)
    if isinstance(generator, Sequence):
        return torch.stack([torch.multinomial(p, 1, generator=g).squeeze(-1) for p, g in zip(probabilities, generator)])
    flat = torch.multinomial(probabilities.flatten(0, 1), 1, generator=generator)
    return flat.view(scores.shape[:2])


@torch.no_grad()
def sample_stage(
    model: ARTransformer,
    spec: StageSpec,
    num_frames: int,
    conditions: torch.Tensor | None,
    text: tuple[torch.Tensor, torch.Tensor] | None,
    scales: Sequence[float],
    settings: SamplingSettings = SamplingSettings(),
    generator: Generators = None,
    use_cache: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Generate ``spec``'s target ``[B, n_target, num_frames]``.

    Args:
        conditions: ``[B, C, num_frames]`` the stage's condition streams per target frame (vocal streams already the
            null when there is no vocal), or None for a model without streams.
        text: ``(sequence [B, S, D], mask [B, S])`` for the cross-attention, or None.
        scales: guidance scales of the conditions present, in order: ``[text]`` or ``[text, vocal]`` (the vocal scale
            only when the stage has vocal streams and a vocal is given); ``[]`` = unguided.
    """
    batch_size = (text[0] if text is not None else conditions).shape[0]
    check_generators(generator, batch_size)
    steps = spec.num_steps(num_frames)
    if steps > model.config.max_length:
        raise GenerationError(f"{spec.name} stage: {num_frames} frames make {steps} steps with the {spec.pattern.name} "
                              f"pattern, more than the model's max_length={model.config.max_length}; generate less "
                              "audio or build the stage with a larger max_length")
    device = model.device
    guided = any(scale != 1 for scale in scales)
    copies = len(scales) + 1 if guided else 1
    rows = guidance_rows(spec, _to(spec.conditions_at_steps(conditions, num_frames), device),
                         None if text is None else (text[0].to(device), text[1].to(device)), len(scales) if guided else 0)

    sequence = torch.full((batch_size, spec.model_codebooks, steps), spec.empty_id, dtype=torch.long, device=device)
    inputs = torch.full((batch_size * copies, spec.model_codebooks, steps), spec.empty_id, dtype=torch.long, device=device)
    cache = model.new_cache(batch_size * copies, steps) if use_cache else None
    step_conditions, context, mask = rows.conditions, rows.context, rows.mask
    for step in tqdm(range(steps), desc=f"AR {spec.name}", unit="step", disable=not progress, leave=False):
        if use_cache:
            window = slice(step, step + 1)
            logits = model(inputs[..., window], None if step_conditions is None else step_conditions[..., window],
                           context if step == 0 else None, mask if step == 0 else None, cache=cache).logits[..., -1, :]
        else:
            window = slice(0, step + 1)
            logits = model(inputs[..., window], None if step_conditions is None else step_conditions[..., window],
                           context, mask).logits[..., -1, :]
        scores = torch.log_softmax(logits.float(), dim=-1)  # [rows, Km, V]
        if guided:
            scores = guided_prediction(split_stages(scores, len(scales)), scales)
        scores = _restrict(spec, scores, step)
        tokens = draw(settings.warp(scores.flatten(0, 1)).view(scores.shape), generator)  # [B, Km]
        tokens = _keep_real(spec, tokens, step, num_frames)
        sequence[..., step] = tokens
        if step + 1 < steps:
            inputs[..., step + 1] = repeat_batch(tokens, copies)
    return spec.target(sequence)


@dataclass
class GuidanceRows:
    """The model inputs of the ``(n+1)·B`` stage-major rows of one guided forward: condition streams per step
    ``[(n+1)·B, C, S]`` (or None), text ``context [(n+1)·B, S_t, D]`` and ``mask`` (or None)."""

    conditions: torch.Tensor | None
    context: torch.Tensor | None
    mask: torch.Tensor | None


def guidance_rows(spec: StageSpec, conditions: torch.Tensor | None, text: tuple[torch.Tensor, torch.Tensor] | None,
                  num_contexts: int) -> GuidanceRows:
    """Repeat the conditions for ``num_contexts`` guided conditions (0 = unguided: the rows as given): row block ``j``
    keeps the first ``j`` of (text, vocal); a dropped text is an all-False mask, a dropped vocal its streams' null."""
    copies = num_contexts + 1
    context = mask = None
    if text is not None:
        context, mask = repeat_batch(text[0], copies), repeat_batch(text[1], copies).clone()
    if conditions is not None:
        conditions = repeat_batch(conditions, copies).clone()
    if num_contexts:
        batch_size = (conditions if conditions is not None else context).shape[0] // copies
        drops = guidance_drop_masks(batch_size, num_contexts, (mask if mask is not None else conditions).device)
        if mask is not None:
            mask[drops[0]] = False
        if num_contexts > 1:
            for stream in spec.vocal_streams:
                conditions[drops[1], stream] = spec.condition_vocab_sizes[stream]
    return GuidanceRows(conditions, context, mask)


def _to(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _restrict(spec: StageSpec, scores: torch.Tensor, step: int) -> torch.Tensor:
    """A flattened stream may only emit the ids of the codebook its position belongs to."""
    if isinstance(spec.pattern, DelayPattern) or spec.n_target == 1:
        return scores
    low = (step % spec.n_target) * spec.vocab_size
    allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
    allowed[low : low + spec.vocab_size] = True
    return scores.masked_fill(~allowed, float("-inf"))


def _keep_real(spec: StageSpec, tokens: torch.Tensor, step: int, num_frames: int) -> torch.Tensor:
    """Delay pattern: the codebooks that hold no real token at this step get the empty id."""
    if not isinstance(spec.pattern, DelayPattern) or spec.n_target == 1:
        return tokens
    codebooks, _ = spec.pattern.step_positions(step, num_frames)
    real = torch.zeros(tokens.shape[1], dtype=torch.bool, device=tokens.device)
    real[codebooks.to(tokens.device)] = True
    return torch.where(real, tokens, spec.empty_id)
