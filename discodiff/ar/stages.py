"""The three stages of the AR family on one codec, and what each models (AudioLM / HAFM's hierarchy):

============  =============================================  ===================================================
stage         target (what it generates)                     time-aligned condition streams
============  =============================================  ===================================================
``semantic``  accompaniment semantic tokens ``[B, 1, Ts]``   the vocal's semantic tokens (vocal)
``coarse``    codebooks ``0 … c−1`` ``[B, c, T]``            accompaniment semantic, vocal semantic (vocal), both
                                                             resampled to codec frames by time
``fine``      codebooks ``c … K−1`` ``[B, K−c, T]``          the coarse codes ``0 … c−1``
============  =============================================  ===================================================

Every stage also cross-attends to the text. ``K``, ``c`` and the codebook size come from the codec and the
config, ``k`` from the semantic tokenizer. The coarse and fine targets are laid out by a codebook pattern
(:mod:`.patterns`); the semantic stage has one stream, where both patterns are the identity.

:class:`StageSpec` turns a stage's target and conditions into the transformer's sequences: the pattern sequence,
its teacher-forcing input (shifted right by one step behind an empty start token), the condition streams at every
step (the condition of the frame that step predicts), the loss mask, and back. One spec serves the training loss
(:meth:`StageSpec.loss`) and the sampler (:mod:`.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from ..errors import ConfigError, DataError
from .config import STAGES
from .patterns import DelayPattern, FlattenPattern, align_by_time, make_pattern


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``n_target`` codebooks of ``vocab_size`` ids in ``pattern``; condition streams of
    ``condition_vocab_sizes`` ids, of which those in ``vocal_streams`` are the vocal (dropped together for guidance)."""

    name: str
    n_target: int
    vocab_size: int
    pattern: DelayPattern | FlattenPattern
    condition_vocab_sizes: tuple[int, ...]
    vocal_streams: tuple[int, ...]

    # --- the transformer this stage needs ---------------------------------------------------------------

    @property
    def model_codebooks(self) -> int:
        """Token streams per step of the transformer (``n_codebooks``)."""
        return self.pattern.stream_codebooks

    @property
    def model_vocab_size(self) -> int:
        """Ids per stream of the transformer: ``V``, or the joint ``n_target · V`` of the flattened stream."""
        return self.vocab_size * (self.n_target if isinstance(self.pattern, FlattenPattern) else 1)

    @property
    def empty_id(self) -> int:
        """The transformer's empty token (its ``vocab_size``): the start token and the delay pattern's holes."""
        return self.model_vocab_size

    # --- sequences ----------------------------------------------------------------------------------------

    def sequence(self, target: torch.Tensor) -> torch.Tensor:
        """Target ``[B, n_target, T]`` ids ``0 … V−1`` → the pattern sequence ``[B, model_codebooks, S]``."""
        if isinstance(self.pattern, FlattenPattern):
            return self.pattern.offset_tokens(self.pattern.build(target), self.vocab_size)
        return self.pattern.build(target, self.empty_id)

    def target(self, sequence: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sequence`: ``[B, model_codebooks, S]`` → ``[B, n_target, T]``."""
        if isinstance(self.pattern, FlattenPattern):
            return self.pattern.revert(self.pattern.strip_offsets(sequence, self.vocab_size))
        return self.pattern.revert(sequence)

    def num_steps(self, num_frames: int) -> int:
        return self.pattern.sequence_length(num_frames)

    def step_frames(self, num_frames: int, device=None) -> torch.Tensor:
        """``[S]`` long: the frame each step predicts (the frame of its first real token), whose conditions it gets."""
        steps = torch.arange(self.num_steps(num_frames), device=device)
        if isinstance(self.pattern, FlattenPattern):
            return steps // self.n_target
        return steps.clamp(max=num_frames - 1)

    def step_codebooks(self, steps: int, device=None) -> torch.Tensor:
        """``[model_codebooks, steps]`` long: the target codebook of every sequence position (per-codebook losses)."""
        if isinstance(self.pattern, FlattenPattern):
            return (torch.arange(steps, device=device) % self.n_target)[None]
        return torch.arange(self.n_target, device=device)[:, None].expand(-1, steps)

    def conditions_at_steps(self, conditions: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
        """Conditions ``[B, C, T]`` per target frame → ``[B, C, S]`` per step."""
        if conditions is None:
            return None
        return conditions[:, :, self.step_frames(num_frames, conditions.device)]

    def teacher_forcing(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` ``[B, model_codebooks, S]``: the labels are the pattern sequence, the inputs the same
        shifted right by one step behind an all-empty start step."""
        labels = self.sequence(target)
        inputs = torch.cat([torch.full_like(labels[..., :1], self.empty_id), labels[..., :-1]], dim=-1)
        return inputs, labels

    def label_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """``frame_mask [B, T]`` (True = real frame) → ``[B, model_codebooks, S]`` True where a label is a real token
        of a real frame (not a delay hole, not padding)."""
        num_frames = frame_mask.shape[1]
        if isinstance(self.pattern, FlattenPattern):
            frames = (torch.arange(self.num_steps(num_frames), device=frame_mask.device) // self.n_target)[None]
            holes = torch.ones_like(frames, dtype=torch.bool)
        else:
            frames = self.pattern.frame_index(num_frames, frame_mask.device)
            holes = frames >= 0
        real = frame_mask[:, frames.clamp(min=0)]  # [B, Km, S]
        return real & holes[None]

    # --- the loss -----------------------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy ``[B]``: averaged over the real tokens of each target codebook, then over the
        codebooks (so codebooks weigh the same whatever the pattern). ``logits [B, Km, S, V]``, ``labels`` and
        ``mask [B, Km, S]``. A sample with no real token gets 0."""
        # holes hold the empty id, which no head predicts: clamp them to a real id (their loss is masked out)
        token_loss = functional.cross_entropy(logits.float().flatten(0, 2), labels.clamp(max=logits.shape[-1] - 1).flatten(),
                                              reduction="none").view(labels.shape)
        codebook = self.step_codebooks(labels.shape[-1], labels.device)
        one_hot = functional.one_hot(codebook, self.n_target).to(token_loss.dtype)  # [Km, S, n_target]
        weights = mask.to(token_loss.dtype)
        totals = torch.einsum("bks,ksc->bc", token_loss * weights, one_hot)
        counts = torch.einsum("bks,ksc->bc", weights, one_hot)
        per_codebook = totals / counts.clamp(min=1)
        present = (counts > 0).to(token_loss.dtype)
        return (per_codebook * present).sum(1) / present.sum(1).clamp(min=1)


def stage_specs(n_codebooks: int, codebook_size: int, coarse_codebooks: int, semantic_k: int,
                pattern: str) -> dict[str, StageSpec]:
    """The three :class:`StageSpec` of a codec with ``n_codebooks`` × ``codebook_size`` codes split after
    ``coarse_codebooks``, semantic tokens of ``semantic_k`` ids and the coarse/fine ``pattern``."""
    if not 1 <= coarse_codebooks < n_codebooks:
        raise ConfigError(f"coarse_codebooks={coarse_codebooks} must be in 1 … {n_codebooks - 1}: the codec has "
                          f"{n_codebooks} codebooks and the fine stage needs at least one")
    fine = n_codebooks - coarse_codebooks
    specs = {
        "semantic": StageSpec("semantic", 1, semantic_k, DelayPattern(1), (semantic_k,), (0,)),
        "coarse": StageSpec("coarse", coarse_codebooks, codebook_size, make_pattern(pattern, coarse_codebooks),
                            (semantic_k, semantic_k), (1,)),
        "fine": StageSpec("fine", fine, codebook_size, make_pattern(pattern, fine),
                          (codebook_size,) * coarse_codebooks, ()),
    }
    assert tuple(specs) == STAGES
    return specs


@dataclass
class StageTokens:
    """Everything the stages read, for one batch: accompaniment ``codes [B, K, T]`` (None when generating), the
    accompaniment's and the vocal's semantic tokens ``[B, Ts]`` (vocal None = no vocal), ``frame_mask [B, T]`` and
    ``semantic_mask [B, Ts]`` (True = real frame), and both frame rates."""

    codes: torch.Tensor | None
    semantic: torch.Tensor | None
    vocal_semantic: torch.Tensor | None
    frame_mask: torch.Tensor
    semantic_mask: torch.Tensor
    codec_rate: float
    semantic_rate: float

    def semantic_at_codec_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """Semantic tokens ``[B, Ts]`` → one per codec frame ``[B, T]``, by time (:func:`align_by_time`)."""
        index = align_by_time(self.frame_mask.shape[1], self.codec_rate, self.semantic_rate,
                              num_source_frames=tokens.shape[1]).to(tokens.device)
        return tokens[:, index]


def stage_target(spec: StageSpec, tokens: StageTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target [B, n_target, frames], frame_mask [B, frames])``: what ``spec`` learns from ``tokens``."""
    if spec.name == "semantic":
        return _required(tokens.semantic, "accompaniment semantic tokens")[:, None], tokens.semantic_mask
    codes = _required(tokens.codes, "accompaniment codes")
    coarse = spec.n_target if spec.name == "coarse" else codes.shape[1] - spec.n_target
    return (codes[:, :coarse] if spec.name == "coarse" else codes[:, coarse:]), tokens.frame_mask


def stage_conditions(spec: StageSpec, tokens: StageTokens, null_vocal: bool | torch.Tensor = False,
                     coarse_codes: torch.Tensor | None = None) -> torch.Tensor:
    """The condition streams ``[B, C, frames]`` of ``spec``'s target frames. The vocal streams are the null where
    ``null_vocal`` (a bool, or ``[B]`` bool per sample) or where there is no vocal. ``coarse_codes [B, c, T]`` are
    the fine stage's conditions (default: the first ``c`` of ``tokens.codes``)."""
    sizes = spec.condition_vocab_sizes
    batch_size = tokens.frame_mask.shape[0]
    if spec.name == "fine":
        if coarse_codes is None:
            coarse_codes = _required(tokens.codes, "accompaniment codes")[:, : len(sizes)]
        return coarse_codes
    vocal = tokens.vocal_semantic
    if spec.name == "semantic":
        length = tokens.semantic_mask.shape[1]
        if vocal is not None and vocal.shape[1] != length:  # an extractor's frame count may differ by one: by time
            index = align_by_time(length, tokens.semantic_rate, tokens.semantic_rate, num_source_frames=vocal.shape[1])
            vocal = vocal[:, index.to(vocal.device)]
        streams = [vocal]
    else:
        length = tokens.frame_mask.shape[1]
        accompaniment = tokens.semantic_at_codec_frames(_required(tokens.semantic, "accompaniment semantic tokens"))
        streams = [accompaniment, None if vocal is None else tokens.semantic_at_codec_frames(vocal)]
    device = tokens.frame_mask.device
    conditions = torch.stack([torch.full((batch_size, length), size, dtype=torch.long, device=device) if stream is None
                              else stream.long() for stream, size in zip(streams, sizes)], dim=1)
    drop = torch.as_tensor(null_vocal, device=device).expand(batch_size)
    for stream in spec.vocal_streams:
        conditions[:, stream] = torch.where(drop[:, None], sizes[stream], conditions[:, stream])
    return conditions


def _required(tensor: torch.Tensor | None, what: str) -> torch.Tensor:
    if tensor is None:
        raise DataError(f"this stage needs the {what}, which the batch does not hold")
    return tensor
