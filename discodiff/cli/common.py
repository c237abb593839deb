"""Options and helpers shared by the command groups: codec options, validated input audio, quiet mode."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from ..audio import read_audio, resample, validate
from ..codec import BACKENDS, DEFAULT_CODEC, DacCodec
from ..codec.resolve import load_codec as resolve_codec
from ..codec.dac_codec import MIN_CHUNK_SECONDS
from ..errors import ConfigError

MAX_CHUNK_SECONDS = 3600.0

CodecOption = typer.Option(DEFAULT_CODEC, "--codec", help="Hub id, local DacModel directory, .pth (with --codec-backend descript), or 'tiny' (random, for demos).")
BackendOption = typer.Option("transformers", "--codec-backend", help=f"Codec implementation: {' or '.join(BACKENDS)}.")
ChunkOption = typer.Option(30.0, "--chunk-seconds", min=MIN_CHUNK_SECONDS, max=MAX_CHUNK_SECONDS,
                           help="Process long audio in chunks of this many seconds (each with 0.5 s of context).")
QuietOption = typer.Option(False, "--quiet", help="No progress bars (ours and those of transformers, diffusers, datasets).")


def check_choice(option: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """``value`` if it is one of ``choices``, else a ConfigError naming ``option`` and the choices."""
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got '{value}'")
    return value


def read_input(path: Path) -> tuple:
    """Validated mono ``([1, T], sample_rate)``, read before any model loads so bad input fails fast."""
    audio, sample_rate = read_audio(path, mono=True)
    validate(audio, sample_rate, str(path))
    return audio, sample_rate


def load_codec(codec: str, backend: str) -> DacCodec:
    """The codec of ``--codec`` / ``--codec-backend`` (:func:`discodiff.codec.resolve.load_codec`: ``tiny`` is the one fixed tiny codec)."""
    return resolve_codec(codec, backend=check_choice("--codec-backend", backend, BACKENDS))


def to_codec_rate(wav, sample_rate: int, codec: DacCodec):
    """``[1, T]`` audio at ``sample_rate`` → ``[1, 1, T']`` at the codec's rate."""
    return resample(wav, sample_rate, codec.sample_rate)[None]


@contextmanager
def library_progress(enabled: bool):
    """Inside the block, hide the progress bars of transformers, diffusers, datasets and the hub when not ``enabled``."""
    if enabled:
        yield
        return
    import datasets
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    switches = [(transformers_logging.is_progress_bar_enabled, transformers_logging.disable_progress_bar,
                 transformers_logging.enable_progress_bar),
                (diffusers_logging.is_progress_bar_enabled, diffusers_logging.disable_progress_bar,
                 diffusers_logging.enable_progress_bar),
                (datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
                (lambda: not hub_utils.are_progress_bars_disabled(), hub_utils.disable_progress_bars,
                 hub_utils.enable_progress_bars)]
    restore = []
    for is_enabled, disable, enable in switches:
        if is_enabled():
            disable()
            restore.append(enable)
    try:
        yield
    finally:
        for enable in restore:
            enable()
