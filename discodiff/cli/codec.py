"""Codec commands: encode, reconstruct, convert-codec, tiny-codec."""

from __future__ import annotations

from pathlib import Path

import typer

from ..audio import save_audio, wav_bytes
from ..outputs import AUDIO_OUTPUT_SUFFIXES, atomic_directory, atomic_file, check_output_dir, check_output_file
from .common import BackendOption, ChunkOption, CodecOption, QuietOption, library_progress, load_codec, read_input, to_codec_rate

CODEC_MARKER = "config.json"
# latents float32 [K·d, L] + codes int64 [K, L] per frame of a 44.1 kHz DAC (72 + 9 values), at the finest hop we know (256)
LATENT_BYTES_PER_SAMPLE = (72 * 4 + 9 * 8) / 256


def encode(
    audio: Path = typer.Argument(..., help="Input audio file (wav/flac/ogg/mp3)."),
    out: Path = typer.Argument(..., help="Output .safetensors with 'latents' [1, K*d, L] and 'codes' [1, K, L]."),
    codec: str = CodecOption,
    codec_backend: str = BackendOption,
    chunk_seconds: float = ChunkOption,
    quiet: bool = QuietOption,
) -> None:
    """Encode audio to the DAC latent query and codes."""
    from safetensors.torch import save_file

    check_output_file(out, (".safetensors",), what="output", inputs=[audio])
    wav, rate = read_input(audio)
    check_output_file(out, (".safetensors",), what="output", expected_bytes=int(wav.shape[-1] * 44100 / rate * LATENT_BYTES_PER_SAMPLE))
    with library_progress(not quiet):
        dac = load_codec(codec, codec_backend)
        latents, codes = dac.encode_with_codes(to_codec_rate(wav, rate, dac), chunk_seconds=chunk_seconds, progress=not quiet)
    with atomic_file(out) as temporary:
        save_file({"latents": latents, "codes": codes}, str(temporary),
                  metadata={"codec": str(codec), "sample_rate": str(dac.sample_rate), "hop_length": str(dac.hop_length)})
    typer.echo(f"{out}: latents {tuple(latents.shape)}, codes {tuple(codes.shape)} at {dac.frame_rate:.2f} frames/s")


def reconstruct(
    audio: Path = typer.Argument(..., help="Input audio file."),
    out: Path = typer.Argument(..., help=f"Output audio file ({', '.join(AUDIO_OUTPUT_SUFFIXES)})."),
    codec: str = CodecOption,
    codec_backend: str = BackendOption,
    chunk_seconds: float = ChunkOption,
    quiet: bool = QuietOption,
) -> None:
    """Encode → snap to the codebooks → decode: hear what the latent space keeps."""
    check_output_file(out, AUDIO_OUTPUT_SUFFIXES, inputs=[audio])
    wav, rate = read_input(audio)
    check_output_file(out, AUDIO_OUTPUT_SUFFIXES, expected_bytes=wav_bytes(int(wav.shape[-1] * 44100 / rate)))
    with library_progress(not quiet):
        dac = load_codec(codec, codec_backend)
        wav = to_codec_rate(wav, rate, dac)
        latents = dac.encode(wav, chunk_seconds=chunk_seconds, progress=not quiet)
        recon = dac.decode_latents(latents, length=wav.shape[-1], chunk_seconds=chunk_seconds, progress=not quiet)
    save_audio(out, recon[0], dac.sample_rate)
    typer.echo(f"{out}: {wav.shape[-1] / dac.sample_rate:.2f} s reconstructed through {latents.shape[1]} latent channels")


def convert_codec(
    pth: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Original DAC .pth checkpoint."),
    out_dir: Path = typer.Argument(..., help="Output transformers DacModel directory (new or empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it already holds a codec."),
) -> None:
    """Convert an original DAC .pth checkpoint into a transformers DacModel directory.

    Needs the original `dac` package: `pip install 'discodiff[dac]'` (on CPU-only torch:
    `bash scripts/install.sh --descript`).
    """
    from ..codec.convert import convert_descript_checkpoint

    check_output_dir(out_dir, what="codec directory", marker=CODEC_MARKER, overwrite=overwrite)
    with atomic_directory(out_dir) as temporary:
        convert_descript_checkpoint(pth, temporary)
    typer.echo(f"wrote {out_dir}")


def tiny_codec(
    out_dir: Path = typer.Argument(..., help="Directory to write the codec to (new or empty)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Weight seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it already holds a codec."),
) -> None:
    """Write a tiny random DAC (for offline demos and tests; its output is not music)."""
    from ..codec import build_tiny_codec

    check_output_dir(out_dir, what="codec directory", marker=CODEC_MARKER, overwrite=overwrite)
    codec = build_tiny_codec(seed=seed)
    with atomic_directory(out_dir) as temporary:
        codec.save_pretrained(temporary)
    typer.echo(f"wrote tiny random codec to {out_dir}")
