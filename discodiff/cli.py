"""The ``discodiff`` command. Thin: every command parses options and calls the library."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from pathlib import Path

import typer

from .audio import AudioError, read_audio, resample, save_audio, validate
from .codec import BACKENDS, DEFAULT_CODEC, CodecNotFoundError, DacCodec

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

CodecOption = typer.Option(DEFAULT_CODEC, "--codec", help="Hub id, local DacModel directory, or .pth (descript backend).")
BackendOption = typer.Option("transformers", "--codec-backend", help=f"One of {', '.join(BACKENDS)}.")
ChunkOption = typer.Option(30.0, "--chunk-seconds", help="Process long audio in chunks of this many seconds.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _load_codec(codec: str, backend: str) -> DacCodec:
    try:
        return DacCodec.from_pretrained(codec, backend=backend)
    except (CodecNotFoundError, ImportError, ValueError) as err:
        _fail(str(err))


def _read_input(path: Path) -> tuple:
    """Validated mono ``([1, T], sample_rate)``, read before any model loads so bad input fails fast."""
    try:
        audio, sample_rate = read_audio(path, mono=True)
        validate(audio, sample_rate, str(path))
    except AudioError as err:
        _fail(str(err))
    return audio, sample_rate


@app.command()
def encode(
    audio: Path = typer.Argument(..., help="Input audio file (wav/flac/ogg/mp3)."),
    out: Path = typer.Argument(..., help="Output .safetensors with 'latents' [1, K*d, L] and 'codes' [1, K, L]."),
    codec: str = CodecOption,
    codec_backend: str = BackendOption,
    chunk_seconds: float = ChunkOption,
) -> None:
    """Encode audio to the DAC latent query and codes."""
    from safetensors.torch import save_file

    wav, sample_rate = _read_input(audio)
    dac = _load_codec(codec, codec_backend)
    wav = resample(wav, sample_rate, dac.sample_rate)[None]
    latents, codes = dac.encode_with_codes(wav, chunk_seconds=chunk_seconds)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents, "codes": codes}, str(out),
              metadata={"codec": str(codec), "sample_rate": str(dac.sample_rate), "hop_length": str(dac.hop_length)})
    typer.echo(f"{out}: latents {tuple(latents.shape)}, codes {tuple(codes.shape)} at {dac.frame_rate:.2f} frames/s")


@app.command()
def reconstruct(
    audio: Path = typer.Argument(..., help="Input audio file."),
    out: Path = typer.Argument(..., help="Output audio file (wav/flac/ogg)."),
    codec: str = CodecOption,
    codec_backend: str = BackendOption,
    chunk_seconds: float = ChunkOption,
) -> None:
    """Encode → snap to the codebooks → decode: hear what the latent space keeps."""
    wav, sample_rate = _read_input(audio)
    dac = _load_codec(codec, codec_backend)
    wav = resample(wav, sample_rate, dac.sample_rate)[None]
    latents = dac.encode(wav, chunk_seconds=chunk_seconds)
    recon = dac.decode_latents(latents, length=wav.shape[-1], chunk_seconds=chunk_seconds)
    save_audio(out, recon[0], dac.sample_rate)
    typer.echo(f"{out}: {wav.shape[-1] / dac.sample_rate:.2f} s reconstructed through {latents.shape[1]} latent channels")


@app.command()
def info() -> None:
    """Versions, available codec backends and compute device."""
    import torch

    typer.echo(f"discodiff {importlib.metadata.version('discodiff')}  python {platform.python_version()}")
    for name in ("torch", "transformers", "diffusers", "accelerate", "datasets"):
        typer.echo(f"  {name:<13}{importlib.metadata.version(name)}")
    descript = importlib.util.find_spec("dac") is not None
    typer.echo(f"codec backends: transformers (default), descript ({'installed' if descript else 'not installed: pip install discodiff[dac]'})")
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    typer.echo(f"device: {device}, {torch.get_num_threads()} CPU threads")


@app.command("convert-codec")
def convert_codec(
    pth: Path = typer.Argument(..., help="Original DAC .pth checkpoint."),
    out_dir: Path = typer.Argument(..., help="Output transformers DacModel directory."),
) -> None:
    """Convert an original DAC .pth checkpoint into a transformers DacModel directory."""
    from .codec.convert import convert_descript_checkpoint

    try:
        typer.echo(f"wrote {convert_descript_checkpoint(pth, out_dir)}")
    except (CodecNotFoundError, ImportError, ValueError) as err:
        _fail(str(err))


@app.command("tiny-codec")
def tiny_codec(
    out_dir: Path = typer.Argument(..., help="Directory to write the codec to."),
    seed: int = typer.Option(0, help="Weight seed."),
) -> None:
    """Write a tiny random DAC (for offline demos and tests; its output is not music)."""
    from .codec import build_tiny_codec

    build_tiny_codec(seed=seed).save_pretrained(out_dir)
    typer.echo(f"wrote tiny random codec to {out_dir}")


@app.command("render-corpus")
def render_corpus_command(
    pieces: list[str] = typer.Option(["bach/bwv66.6"], "--pieces", help="music21 corpus paths or globs, repeatable or comma-separated (train on bach/... only)."),
    out: Path = typer.Option(Path("rendered"), "--out", help="Output folder: <track_id>/{vocals,accompaniment,mixture}.wav, captions.jsonl."),
    seconds: float = typer.Option(None, "--seconds", help="Keep at most this many seconds per piece (default: whole pieces)."),
    seed: int = typer.Option(0, "--seed", help="Seed for tempo, instruments and transposition."),
    workers: int = typer.Option(1, "--workers", help="Parallel rendering processes."),
    transpose: int = typer.Option(0, "--transpose", help="Transpose each piece by a random shift of up to ± this many semitones."),
    soundfont: Path = typer.Option(None, "--soundfont", help="General MIDI .sf2 file (default: FluidR3_GM from Debian fluid-soundfont-gm)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Render music21 corpus scores to vocal / accompaniment / mixture stems with captions."""
    try:
        from .data.render import render_corpus
        from .data.synth import DEFAULT_SOUNDFONT, RendererUnavailableError
    except ModuleNotFoundError as err:
        _fail(f"{err.name} is not installed: pip install 'discodiff[render]'")
    try:
        report = render_corpus(pieces, out, seconds=seconds, seed=seed, workers=workers, transpose=transpose,
                               progress=not quiet, soundfont=soundfont or DEFAULT_SOUNDFONT)
    except (RendererUnavailableError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"{out}: {len(report.rendered)} tracks, {report.audio_seconds:.1f} s of audio; {len(report.skipped)} skipped")
    for skipped in report.skipped:
        typer.echo(f"  skipped {skipped.piece}: {skipped.reason}")


if __name__ == "__main__":
    app()
