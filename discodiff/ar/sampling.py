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

A ``prefix`` (known first frames of the target, long-form generation's overlap) is laid out by the stage's own pattern;
the steps still run the model over it and still draw, so the generator advances as without a prefix, and only the
drawn tokens of its (codebook, frame) positions are replaced by the known ones.
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
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate ``spec``'s target ``[B, n_target, num_frames]``.

    Args:
        conditions: ``[B, C, num_frames]`` the stage's condition streams per target frame (vocal streams already the
            null when there is no vocal), or None for a model without streams.
        text: ``(sequence [B, S, D], mask [B, S])`` for the cross-attention, or None.
        scales: guidance scales of the conditions present, in order: ``[text]`` or ``[text, vocal]`` (the vocal scale
            only when the stage has vocal streams and a vocal is given); ``[]`` = unguided.
        prefix: ``[B, n_target, P]`` known first frames (``1 ≤ P < num_frames``, ids ``0 … vocab_size − 1``): they are
            the target's first ``P`` frames, unchanged, and the model reads them as its context. Given the first frames
            of a run, the same generator continues that run exactly.
    """
    batch_size = (text[0] if text is not None else conditions).shape[0]
    check_generators(generator, batch_size)
    steps = spec.num_steps(num_frames)
    if steps > model.config.max_length:
        raise GenerationError(f"{spec.name} stage: {num_frames} frames make {steps} steps with the {spec.pattern.name} "
                              f"pattern, more than the model's max_length={model.config.max_length}; generate less "
                              "audio or build the stage with a larger max_length")
    device = model.device
    if prefix is not None:
        prefix = _checked_prefix(spec, prefix, batch_size, num_frames).to(device)
    known = None if prefix is None else known_positions(spec, prefix, num_frames)
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
        if known is not None:
            tokens = torch.where(known.mask[:, step], known.sequence[..., step], tokens)
        sequence[..., step] = tokens
        if step + 1 < steps:
            inputs[..., step + 1] = repeat_batch(tokens, copies)
    return spec.target(sequence)


@dataclass
class KnownPositions:
    """A prefix laid out as a ``num_frames`` pattern sequence: ``sequence [B, model_codebooks, S]`` (the prefix's tokens
    where ``mask [model_codebooks, S]`` is True, placeholders elsewhere)."""

    sequence: torch.Tensor
    mask: torch.Tensor


def known_positions(spec: StageSpec, prefix: torch.Tensor, num_frames: int) -> KnownPositions:
    """The pattern positions of ``prefix [B, n_target, P]``, the first ``P`` of ``num_frames`` target frames, and their
    tokens: the stage's own sequence of the prefix padded to ``num_frames``, and its label mask of the first ``P``
    frames (every (codebook, step) that holds one of them, for the delay and the flatten pattern alike)."""
    batch_size, _, known_frames = prefix.shape
    padded = torch.cat([prefix, prefix.new_zeros(batch_size, spec.n_target, num_frames - known_frames)], dim=-1)
    frame_mask = (torch.arange(num_frames, device=prefix.device) < known_frames)[None]
    return KnownPositions(spec.sequence(padded), spec.label_mask(frame_mask)[0])


def _checked_prefix(spec: StageSpec, prefix, batch_size: int, num_frames: int) -> torch.Tensor:
    """``prefix`` as long ids, or a :class:`GenerationError` naming what is wrong with it."""
    integer = isinstance(prefix, torch.Tensor) and not (prefix.dtype.is_floating_point or prefix.dtype.is_complex
                                                        or prefix.dtype == torch.bool)
    if not integer or prefix.ndim != 3 or prefix.shape[:2] != (batch_size, spec.n_target) or \
            not 1 <= prefix.shape[2] < num_frames:
        got = f"{tuple(prefix.shape)} {prefix.dtype}" if isinstance(prefix, torch.Tensor) else type(prefix).__name__
        raise GenerationError(f"{spec.name} stage: prefix must be an integer tensor [{batch_size}, {spec.n_target}, P] "
                              f"with 1 ≤ P < {num_frames} (the frames generated), got {got}")
    if prefix.min() < 0 or prefix.max() >= spec.vocab_size:
        raise GenerationError(f"{spec.name} stage: prefix ids must be in 0 … {spec.vocab_size - 1}")
    return prefix.long()


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
