"""Codebook patterns of the AR family: how ``K`` parallel codebooks of codec codes become the token sequence the
:class:`~discodiff.ar.transformer.ARTransformer` models, and back. Pure tensor transforms, no learned state.

- :class:`DelayPattern` — MusicGen's delay pattern (Copet et al. 2023; audiocraft's ``DelayedPatternProvider``):
  codebook ``k`` shifted right by ``k`` steps, so one step predicts ``K`` tokens, each of a different frame, and
  codebook ``k`` of frame ``f`` is predicted after codebooks ``0 … k−1`` of that frame. ``T + K − 1`` steps for
  ``T`` frames. The model runs with ``n_codebooks = K``.
- :class:`FlattenPattern` — HAFM's interleaved flattening (after AudioLM's coarse and fine stages): every token
  its own step, frame-major (``f0 c0, f0 c1, …, f0 c(K−1), f1 c0, …``), ``K · T`` steps. The model runs with
  ``n_codebooks = 1`` over a joint vocabulary of ``K · V`` tokens (:meth:`FlattenPattern.offset_tokens`).

:func:`make_pattern` picks one by name (:data:`PATTERN_NAMES`). :func:`align_by_time` maps frames of one rate to
frames of another (semantic tokens at 50 Hz ↔ codec frames at ~86.13 Hz) by time.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, GenerationError

PATTERN_NAMES = ("delay", "flatten")


def _check_n_codebooks(n_codebooks: int) -> int:
    if isinstance(n_codebooks, bool) or not isinstance(n_codebooks, int) or n_codebooks < 1:
        raise ConfigError(f"a codebook pattern needs n_codebooks as a positive integer, got {n_codebooks!r}")
    return n_codebooks


def _check_tokens(tokens: torch.Tensor, what: str, codebooks: int) -> tuple[int, int]:
    """Raise :class:`GenerationError` unless ``tokens`` is an integer ``[B, codebooks, L]`` tensor with ``B, L ≥ 1``;
    return ``(B, L)``."""
    integer = isinstance(tokens, torch.Tensor) and not (tokens.dtype.is_floating_point or tokens.dtype.is_complex
                                                         or tokens.dtype == torch.bool)
    if not integer or tokens.ndim != 3 or tokens.shape[1] != codebooks:
        shape = (f"shape {tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor)
                 else type(tokens).__name__)
        raise GenerationError(f"{what} must be an integer tensor [B, {codebooks}, length], got {shape}")
    batch_size, _, length = tokens.shape
    if batch_size == 0 or length == 0:
        raise GenerationError(
            f"{what} must hold at least one sequence and one position, got shape {tuple(tokens.shape)}"
        )
    return batch_size, length


def _check_count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenerationError(f"{what} must be a positive integer, got {value!r}")
    return value


class DelayPattern:
    """MusicGen's delay pattern over ``K`` codebooks: codes ``[B, K, T]`` ↔ sequence ``[B, K, T + K − 1]``.

    Sequence position ``(k, s)`` holds codebook ``k`` of frame ``s − k`` when ``0 ≤ s − k < T``, else the caller's
    empty token. Example, ``K = 3``, ``T = 4``, ``·`` = empty::

        c0:  a0 a1 a2 a3 ·  ·
        c1:  ·  b0 b1 b2 b3 ·
        c2:  ·  ·  c0 c1 c2 c3
    """

    name = "delay"

    def __init__(self, n_codebooks: int):
        self.n_codebooks = _check_n_codebooks(n_codebooks)

    @property
    def stream_codebooks(self) -> int:
        """Codebooks per step of the pattern sequence (the transformer's ``n_codebooks``): ``K``."""
        return self.n_codebooks

    def sequence_length(self, num_frames: int) -> int:
        """Steps of the pattern sequence for ``num_frames`` frames: ``T + K − 1``."""
        return _check_count(num_frames, "num_frames") + self.n_codebooks - 1

    def num_frames(self, sequence_length: int) -> int:
        """Frames ``T`` of a pattern sequence of ``sequence_length = T + K − 1`` steps."""
        frames = _check_count(sequence_length, "sequence_length") - self.n_codebooks + 1
        if frames < 1:
            raise GenerationError(
                f"a delay-pattern sequence over {self.n_codebooks} codebooks has at least {self.n_codebooks} steps "
                f"(T + K − 1 with T ≥ 1), got {sequence_length}"
            )
        return frames

    def build(self, codes: torch.Tensor, empty_id: int) -> torch.Tensor:
        """Codes ``[B, K, T]`` (integer) → pattern sequence ``[B, K, T + K − 1]``, same dtype and device, with
        ``empty_id`` (e.g. :attr:`ARTransformer.empty_token_id`) in the holes."""
        batch_size, num_frames = _check_tokens(codes, "codes", self.n_codebooks)
        if isinstance(empty_id, bool) or not isinstance(empty_id, int):
            raise GenerationError(f"empty_id must be an integer token id, got {empty_id!r}")
        sequence = codes.new_full((batch_size, self.n_codebooks, self.sequence_length(num_frames)), empty_id)
        for k in range(self.n_codebooks):
            sequence[:, k, k:k + num_frames] = codes[:, k]
        return sequence

    def revert(self, sequence: torch.Tensor) -> torch.Tensor:
        """Pattern sequence ``[B, K, T + K − 1]`` → codes ``[B, K, T]``; the holes are ignored, whatever they
        hold."""
        _, length = _check_tokens(sequence, "a delay-pattern sequence", self.n_codebooks)
        num_frames = self.num_frames(length)
        return torch.stack([sequence[:, k, k:k + num_frames] for k in range(self.n_codebooks)], dim=1)

    def frame_index(self, num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[K, T + K − 1]`` long: the frame held at each (codebook, step) of the sequence, ``−1`` at a hole."""
        steps = torch.arange(self.sequence_length(num_frames), device=device)
        frames = steps[None, :] - torch.arange(self.n_codebooks, device=device)[:, None]
        return frames.masked_fill((frames < 0) | (frames >= num_frames), -1)

    def valid_mask(self, num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[K, T + K − 1]`` bool, True where the sequence holds a real token (the loss mask); ``K · T`` Trues."""
        return self.frame_index(num_frames, device) >= 0

    def step_positions(self, step: int, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What step ``step`` of the sequence holds, for a sampler: ``(codebooks, frames)``, two long tensors of the
        same length (1 … K), the codebooks that hold a real token at that step (ascending) and the frame of each.
        Every other codebook holds the empty token at that step."""
        length = self.sequence_length(num_frames)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < length:
            raise GenerationError(f"step must be an integer in 0 … {length - 1} (T={num_frames}), got {step!r}")
        frames = self.frame_index(num_frames)[:, step]
        codebooks = torch.nonzero(frames >= 0).flatten()
        return codebooks, frames[codebooks]


class FlattenPattern:
    """HAFM's interleaved flattening over ``K`` codebooks: codes ``[B, K, T]`` ↔ one stream ``[B, 1, K · T]``,
    frame-major: stream position ``f · K + k`` holds codebook ``k`` of frame ``f``. No holes.

    The stream's tokens are codes ``0 … V−1`` of whichever codebook its position belongs to
    (:meth:`codebook_index`); :meth:`offset_tokens` maps them into one joint vocabulary of ``K · V`` ids for a model
    with ``n_codebooks = 1`` and ``vocab_size = K · V``, :meth:`strip_offsets` maps back.
    """

    name = "flatten"

    def __init__(self, n_codebooks: int):
        self.n_codebooks = _check_n_codebooks(n_codebooks)

    @property
    def stream_codebooks(self) -> int:
        """Codebooks per step of the stream (the transformer's ``n_codebooks``): 1."""
        return 1

    def sequence_length(self, num_frames: int) -> int:
        """Steps of the stream for ``num_frames`` frames: ``K · T``."""
        return _check_count(num_frames, "num_frames") * self.n_codebooks

    def num_frames(self, sequence_length: int) -> int:
        """Frames ``T`` of a stream of ``sequence_length = K · T`` steps."""
        if _check_count(sequence_length, "sequence_length") % self.n_codebooks:
            raise GenerationError(
                f"a flattened stream over {self.n_codebooks} codebooks has a multiple of {self.n_codebooks} steps, "
                f"got {sequence_length}"
            )
        return sequence_length // self.n_codebooks

    def build(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, T]`` (integer) → stream ``[B, 1, K · T]``, same dtype and device, frame-major."""
        batch_size, num_frames = _check_tokens(codes, "codes", self.n_codebooks)
        return codes.transpose(1, 2).reshape(batch_size, 1, self.sequence_length(num_frames))

    def revert(self, stream: torch.Tensor) -> torch.Tensor:
        """Stream ``[B, 1, K · T]`` → codes ``[B, K, T]``."""
        batch_size, length = _check_tokens(stream, "a flattened stream", 1)
        return stream.reshape(batch_size, self.num_frames(length), self.n_codebooks).transpose(1, 2)

    def valid_mask(self, num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[1, K · T]`` bool, all True (the stream has no holes); the contract of
        :meth:`DelayPattern.valid_mask`."""
        return torch.ones(1, self.sequence_length(num_frames), dtype=torch.bool, device=device)

    def codebook_index(self, length: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[length]`` long: the codebook of each of the first ``length`` stream positions (``position mod K``);
        any ``length ≥ 0``, so a sampler may ask for a stream it has only begun."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise GenerationError(f"length must be a non-negative integer, got {length!r}")
        return torch.arange(length, device=device) % self.n_codebooks

    def token_offsets(self, length: int, vocab_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[length]`` long: ``k · vocab_size`` for each position's codebook ``k``; codebook ``k``'s ids in the
        joint vocabulary are ``offset … offset + vocab_size − 1`` (the logits a sampler keeps at that position)."""
        return self.codebook_index(length, device) * _check_count(vocab_size, "vocab_size")

    def offset_tokens(self, stream: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Stream ``[B, 1, L]`` of per-codebook codes ``0 … V−1`` → the same ids in the joint vocabulary,
        ``k · V + code`` (``L`` may be any length ≥ 1, so a prompt or a partial stream works too)."""
        _, length = _check_tokens(stream, "a flattened stream", 1)
        low, high = stream.min().item(), stream.max().item()
        if low < 0 or high >= vocab_size:
            raise GenerationError(
                f"codes of a flattened stream must be in 0 … {vocab_size - 1} (vocab_size={vocab_size}), "
                f"got ids from {low} to {high}"
            )
        return stream + self.token_offsets(length, vocab_size, stream.device)

    def strip_offsets(self, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Inverse of :meth:`offset_tokens`: joint-vocabulary ids ``[B, 1, L]`` → per-codebook codes. Raises
        :class:`GenerationError` where an id is outside its position's codebook range."""
        _, length = _check_tokens(tokens, "a flattened stream", 1)
        codes = tokens - self.token_offsets(length, vocab_size, tokens.device)
        outside = (codes < 0) | (codes >= vocab_size)
        if outside.any():
            row, _, position = (int(i) for i in torch.nonzero(outside)[0])
            k = position % self.n_codebooks
            raise GenerationError(
                f"token {int(tokens[row, 0, position])} at stream position {position} (codebook {k}) of row {row} is "
                f"outside that codebook's ids {k * vocab_size} … {(k + 1) * vocab_size - 1} (vocab_size={vocab_size})"
            )
        return codes


def make_pattern(name: str, n_codebooks: int) -> DelayPattern | FlattenPattern:
    """The codebook pattern called ``name`` (one of :data:`PATTERN_NAMES`) over ``n_codebooks`` codebooks."""
    patterns = {DelayPattern.name: DelayPattern, FlattenPattern.name: FlattenPattern}
    if not isinstance(name, str) or name not in patterns:
        raise ConfigError(f"unknown codebook pattern {name!r}; choose one of {', '.join(PATTERN_NAMES)}")
    return patterns[name](n_codebooks)


def align_by_time(
    num_target_frames: int, target_rate: float, source_rate: float, *, num_source_frames: int
) -> torch.Tensor:
    """For every frame of a target sequence, the index of the source frame that covers the same time:
    ``[num_target_frames]`` long, non-decreasing, in ``0 … num_source_frames − 1``.

    Convention: frame ``i`` of a sequence at ``rate`` frames/s covers the half-open interval
    ``[i / rate, (i + 1) / rate)`` seconds, both sequences starting at time 0. Target frame ``i`` is mapped to the
    source frame whose interval holds its centre time ``(i + ½) / target_rate``, i.e.
    ``floor((i + ½) · source_rate / target_rate)`` (a centre on a boundary goes to the later frame), then clamped
    to ``num_source_frames − 1``: a source a little shorter than the target (the two encoders round the frame
    count of one clip differently, e.g. 862 codec frames vs 500 semantic frames for 10 s) repeats its last frame.
    Equal rates give the identity (for ``num_source_frames ≥ num_target_frames``).

    Example: codec frames (~86.13 Hz) ← semantic tokens (50 Hz): ``source[align_by_time(T_codec, 86.13, 50,
    num_source_frames=T_semantic)]`` is the semantic token stream resampled to one token per codec frame.
    """
    if isinstance(num_target_frames, bool) or not isinstance(num_target_frames, int) or num_target_frames < 0:
        raise ConfigError(f"num_target_frames must be a non-negative integer, got {num_target_frames!r}")
    if isinstance(num_source_frames, bool) or not isinstance(num_source_frames, int) or num_source_frames < 1:
        raise ConfigError(f"num_source_frames must be a positive integer, got {num_source_frames!r}")
    for what, rate in (("target_rate", target_rate), ("source_rate", source_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"{what} must be a positive, finite number of frames per second, got {rate!r}")
    # one division of exact products, so a centre exactly on a source boundary is not rounded below it
    centres = (2 * torch.arange(num_target_frames, dtype=torch.float64) + 1) * source_rate
    return torch.floor(centres / (2 * target_rate)).long().clamp(max=num_source_frames - 1)
