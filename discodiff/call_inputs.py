"""Checks of the arguments every family's pipeline call shares (``prompt``, ``vocal``, ``duration``, ``generator``,
guidance scales), made before any model runs; each raises a :class:`~discodiff.errors.GenerationError` that names
the argument and its valid range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from .audio import load_audio
from .errors import GenerationError, is_real

MAX_DURATION_SECONDS = 600.0  # the longest output of one call (long-form: generated window by window)
MAX_GUIDANCE = 100.0


def check_prompts(prompt) -> list[str]:
    """The prompts as a list; refuses no prompt, non-strings or only blank prompts."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise GenerationError("prompt is an empty list; pass at least one prompt")
    wrong = next((p for p in prompts if not isinstance(p, str)), None)
    if wrong is not None:
        raise GenerationError(f"every prompt must be a string, got {type(wrong).__name__} {wrong!r}")
    if not any(p.strip() for p in prompts):
        which = "the prompt is" if len(prompts) == 1 else f"all {len(prompts)} prompts are"
        raise GenerationError(f"{which} blank; describe the music to generate (e.g. 'a calm piano ballad')")
    return prompts


def read_prompt_file(path: Path, flag: str, error: type[Exception] = GenerationError) -> list[str]:
    """The stripped, non-blank lines of the UTF-8 prompt file ``path`` (given as ``flag``); ``error`` (a
    :class:`~discodiff.errors.DiscoDiffError`) names the flag for a file that is not UTF-8 or holds no prompt."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise error(f"{flag} {path}: not UTF-8 text ({err.reason}); save it as UTF-8") from err
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise error(f"{flag} {path} holds no prompts (blank lines are skipped); write one prompt per line")
    return prompts


def check_scale(name: str, value) -> float:
    """A guidance scale: a finite number in ``0 … MAX_GUIDANCE`` (1 = unguided, 0 ignores the condition)."""
    if not is_real(value) or not math.isfinite(value) or not 0 <= value <= MAX_GUIDANCE:
        raise GenerationError(f"{name}={value!r}: must be a number in 0 … {MAX_GUIDANCE:g} "
                              "(1 = unguided, 0 ignores the condition)")
    return float(value)


def check_duration(duration) -> None:
    """``None`` (the model's default) or seconds in ``(0, MAX_DURATION_SECONDS]``."""
    if duration is None:
        return
    if not is_real(duration) or not math.isfinite(duration) or not 0 < duration <= MAX_DURATION_SECONDS:
        raise GenerationError(f"duration={duration!r} s: must be more than 0 and at most {MAX_DURATION_SECONDS:g} s "
                              "(the longest output of one call)")


def check_generator(generator, batch_size: int) -> None:
    """``None``, a ``torch.Generator`` or a list of exactly ``batch_size`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, Sequence) or not all(isinstance(g, torch.Generator) for g in generator):
        raise GenerationError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    if len(generator) != batch_size:
        raise GenerationError(f"got {len(generator)} generators for {batch_size} prompt(s); "
                              "pass one per prompt or a single generator")


def num_output_samples(duration: float | None, default_duration: float, sample_rate: int) -> int:
    """Samples of audio generated without a vocal: ``duration`` (or the default) seconds at ``sample_rate``."""
    num_samples = round((default_duration if duration is None else duration) * sample_rate)
    if num_samples < 1:
        raise GenerationError(f"duration={duration} s is shorter than one sample at {sample_rate} Hz")
    return num_samples


def vocal_batch(vocal, batch_size: int, sample_rate: int, device: torch.device) -> torch.Tensor | None:
    """Vocal input (a file, or audio ``[T]``, ``[1, T]``, ``[B, 1, T]`` at ``sample_rate``) → ``[B, 1, T]`` float32
    on ``device`` (a single vocal is shared by all prompts); None stays None."""
    if vocal is None:
        return None
    if isinstance(vocal, (str, Path)):
        vocal = load_audio(vocal, sample_rate=sample_rate, mono=True)
    vocal = torch.as_tensor(vocal, dtype=torch.float32)
    vocal = vocal.reshape(1, 1, -1) if vocal.ndim < 3 else vocal
    if vocal.ndim != 3 or vocal.shape[1] != 1 or vocal.shape[0] not in (1, batch_size):
        raise GenerationError(f"vocal must be [T], [1, T] or [{batch_size}, 1, T] mono audio, got {tuple(vocal.shape)}")
    if vocal.shape[-1] == 0:
        raise GenerationError("the vocal has no samples; pass a vocal recording or none")
    seconds = vocal.shape[-1] / sample_rate
    if seconds > MAX_DURATION_SECONDS:
        raise GenerationError(f"the vocal is {seconds:.1f} s long, more than the {MAX_DURATION_SECONDS:g} s one call "
                              f"can generate; cut it into parts of at most {MAX_DURATION_SECONDS:g} s")
    if not torch.isfinite(vocal).all():
        raise GenerationError("the vocal holds NaN or infinite samples; pass finite audio")
    return vocal.expand(batch_size, -1, -1).to(device)
