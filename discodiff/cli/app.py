"""The ``discodiff`` command. Thin: every command parses options and calls the library."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from pathlib import Path

import typer

from ..audio import AudioError, read_audio, resample, save_audio, validate
from ..codec import BACKENDS, DEFAULT_CODEC, CodecNotFoundError, DacCodec

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


def _codec_and_input(path: Path, codec: str, backend: str) -> tuple:
    """The codec and the input as ``[1, 1, T]`` mono at the codec's rate (input checked first)."""
    wav, sample_rate = _read_input(path)
    dac = _load_codec(codec, backend)
    return dac, resample(wav, sample_rate, dac.sample_rate)[None]


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

    dac, wav = _codec_and_input(audio, codec, codec_backend)
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
    dac, wav = _codec_and_input(audio, codec, codec_backend)
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
    from ..codec.convert import convert_descript_checkpoint

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
    from ..codec import build_tiny_codec

    build_tiny_codec(seed=seed).save_pretrained(out_dir)
    typer.echo(f"wrote tiny random codec to {out_dir}")


@app.command("new-model")
def new_model(
    out_dir: Path = typer.Argument(..., help="Model directory to create."),
    config: Path = typer.Option(..., "--config", help="Model config, e.g. configs/tiny.yaml."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    seed: int = typer.Option(0, help="Initialisation seed."),
) -> None:
    """Write a randomly initialised model directory (tiny configs build their own codec and text encoder)."""
    from ..build import build_pipeline
    from ..config import DiscoDiffConfig

    try:
        pipeline = build_pipeline(DiscoDiffConfig.from_yaml(config, overrides), seed=seed)
    except (CodecNotFoundError, OSError, ImportError, ValueError) as err:
        _fail(str(err))
    pipeline.save_pretrained(out_dir)
    sizes = ", ".join(f"{name} {module.num_parameters() / 1e6:.2f}M" for name, module in
                      (("primary", pipeline.primary), ("secondary", pipeline.secondary)))
    typer.echo(f"wrote untrained model to {out_dir} ({sizes} parameters); its samples are noise until trained")


@app.command()
def sample(
    model: Path = typer.Option(..., "--model", help="Model directory (from training export or new-model)."),
    prompt: str = typer.Option(None, "--prompt", help="Text prompt."),
    prompts_file: Path = typer.Option(None, "--prompts-file", help="One prompt per line, for a batch."),
    vocal: Path = typer.Option(None, "--vocal", help="Vocal recording to accompany (output takes its length)."),
    duration: float = typer.Option(None, help="Seconds to generate without a vocal (default: the model's)."),
    out: Path = typer.Option(Path("accompaniment.wav"), "--out", help="Output file; batches add _0, _1, … to the name."),
    mix: Path = typer.Option(None, "--mix", help="Also write vocal + accompaniment here."),
    seed: int = typer.Option(0, help="Sampling seed (one generator per sample: seed, seed+1, …)."),
    steps: int = typer.Option(None, "--steps", help="Inference steps (default: the model's)."),
    text_guidance: float = typer.Option(None, help="Text guidance scale (default: the model's)."),
    vocal_guidance: float = typer.Option(None, help="Vocal guidance scale (default: the model's)."),
    scheduler: str = typer.Option(None, help="Sampler: cosine-dpm, ddim, dpm++ or euler (default: the model's)."),
    batch_size: int = typer.Option(4, help="Prompts per forward batch for --prompts-file."),
    codec: str = typer.Option(None, "--codec", help="Override the model's codec id with a local path."),
    text_encoder: str = typer.Option(None, "--text-encoder", help="Override the model's text encoder id with a local path."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Generate music (an accompaniment when --vocal is given) from a text prompt."""
    import torch

    from ..conditioning import ConditionerNotFoundError
    from ..diffusion import make_scheduler
    from ..pipeline import DiscoDiffPipeline

    if (prompt is None) == (prompts_file is None):
        _fail("give exactly one of --prompt or --prompts-file")
    prompts = [prompt] if prompt is not None else [p.strip() for p in prompts_file.read_text().splitlines() if p.strip()]
    vocal_audio, vocal_rate = _read_input(vocal) if vocal is not None else (None, None)
    try:
        pipeline = DiscoDiffPipeline.from_pretrained(model, codec=codec, text_encoder=text_encoder)
        if scheduler is not None:
            pipeline.scheduler = make_scheduler(scheduler)
    except (CodecNotFoundError, ConditionerNotFoundError, FileNotFoundError, ImportError, ValueError) as err:
        _fail(str(err))
    if vocal_audio is not None:
        vocal_audio = resample(vocal_audio, vocal_rate, pipeline.codec.sample_rate)
    rate = pipeline.codec.sample_rate
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first : first + batch_size]
        generators = [torch.Generator().manual_seed(seed + first + i) for i in range(len(batch))]
        audios = pipeline(batch, vocal=vocal_audio, duration=duration, num_inference_steps=steps, text_guidance=text_guidance,
                          vocal_guidance=vocal_guidance, generator=generators, output_type="pt", progress=not quiet).audios
        for i, audio in enumerate(audios.cpu()):
            name = out if len(prompts) == 1 else out.with_name(f"{out.stem}_{first + i}{out.suffix}")
            save_audio(name, audio, rate)
            typer.echo(f"{name}: {audio.shape[-1] / rate:.2f} s  «{batch[i]}»")
            if mix is not None and vocal_audio is not None:
                mixture = audio + vocal_audio[..., : audio.shape[-1]]
                mix_name = mix if len(prompts) == 1 else mix.with_name(f"{mix.stem}_{first + i}{mix.suffix}")
                save_audio(mix_name, mixture / max(1.0, float(mixture.abs().max())), rate)


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
        from ..data.render import render_corpus
        from ..data.synth import DEFAULT_SOUNDFONT, RendererUnavailableError
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


@app.command()
def prepare(
    input_dir: Path = typer.Argument(..., help="Track folders with vocals + accompaniment (or drums/bass/other) stems; mixes with --separate."),
    out: Path = typer.Option(..., "--out", help="Cache folder: dataset/, latent_stats.json, codec.json, prepare_report.json. A rerun resumes it."),
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", help="Hub id, local DacModel directory, .pth (descript backend), or 'tiny' (random, for demos)."),
    codec_backend: str = BackendOption,
    separate: bool = typer.Option(False, "--separate", help="INPUT_DIR holds mixes: split each with Demucs htdemucs (needs the 'separation' extra)."),
    captions: Path = typer.Option(None, "--captions", help=".jsonl, .csv (track_id,caption) or datasets folder (default: INPUT_DIR/captions.jsonl if present)."),
    window_seconds: float = typer.Option(29.0, "--window-seconds", help="Window length."),
    hop_seconds: float = typer.Option(None, "--hop-seconds", help="Window hop (default: the window length)."),
    min_seconds: float = typer.Option(5.0, "--min-seconds", help="Keep a last, shorter window if it lasts at least this long."),
    quiet_dbfs: float = typer.Option(-25.0, "--quiet-dbfs", help="Drop windows whose accompaniment RMS is below this."),
    vocal_margin_db: float = typer.Option(5.0, "--vocal-margin-db", help="Drop windows whose vocal RMS exceeds the accompaniment's by more."),
    normalize_per: str = typer.Option("codebook", "--normalize-per", help="Latent statistics per 'codebook' or per 'channel'."),
    workers: int = typer.Option(1, "--workers", help="Processes decoding audio (encoding runs in the main process)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per encoder call."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Encode stems (or separated mixes) into a resumable latent cache for training."""
    from ..data.cache import CacheLayout
    from ..data.prepare import load_codec, prepare_latent_cache
    from ..data.separation import DemucsSeparator, SeparationUnavailableError
    from ..data.windows import WindowSettings

    try:
        windows = WindowSettings(window_seconds, hop_seconds, min_seconds, quiet_dbfs, vocal_margin_db)
        separator = DemucsSeparator() if separate else None
        report = prepare_latent_cache(input_dir, out, load_codec(codec, codec_backend), codec, windows=windows,
                                      captions=captions, separator=separator, normalize_per=normalize_per,
                                      workers=workers, batch_size=batch_size, progress=not quiet)
    except (SeparationUnavailableError, CodecNotFoundError, FileNotFoundError, ImportError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"{out}: {report.kept_windows} windows ({report.kept_seconds / 3600:.2f} h) from {report.kept_tracks} "
               f"of {len(report.tracks)} tracks ({report.resumed} finished by an earlier run)")
    for label, counts in (("tracks skipped", report.skipped_tracks), ("windows skipped", report.skipped_windows)):
        if counts:
            typer.echo(f"  {label}: " + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())))
    if report.uncaptioned:
        typer.echo(f"  {len(report.uncaptioned)} tracks without captions (empty caption lists)")
    typer.echo(f"  details: {CacheLayout(out).report_file}")


if __name__ == "__main__":
    app()
