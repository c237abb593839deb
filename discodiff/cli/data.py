"""Data commands: render-corpus (offline real music), prepare (the latent cache for training) and tokenize (its
semantic-token columns for the AR family)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..codec import DEFAULT_CODEC
from ..errors import DataError, require_module
from ..latents import NORMALIZE_PER
from ..outputs import check_output_dir
from .common import BackendOption, QuietOption, check_choice, library_progress, load_codec

MAX_WORKERS = 64


def render_corpus(
    pieces: list[str] = typer.Option(["bach/bwv66.6"], "--pieces",
                                     help="music21 corpus paths or globs, repeatable or comma-separated (train on bach/... only)."),
    out: Path = typer.Option(Path("rendered"), "--out", help="Output folder: <track_id>/{vocals,accompaniment,mixture}.wav, captions.jsonl."),
    seconds: float = typer.Option(None, "--seconds", min=0.1, max=3600.0, help="Keep at most this many seconds per piece [default: whole pieces]."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed for tempo, instruments and transposition."),
    workers: int = typer.Option(1, "--workers", min=1, max=MAX_WORKERS, help="Parallel rendering processes."),
    transpose: int = typer.Option(0, "--transpose", min=0, max=12, help="Transpose each piece by a random shift of up to ± this many semitones."),
    soundfont: Path = typer.Option(None, "--soundfont", help="General MIDI .sf2 file [default: FluidR3_GM from Debian fluid-soundfont-gm]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace tracks in --out that were rendered with other settings."),
    split: str = typer.Option(None, "--split", help="Keep only the Bach pieces of the fixed 'train' or 'validation' split."),
    list_pieces: bool = typer.Option(False, "--list", help="Only list the corpus pieces that --pieces matches."),
    quiet: bool = QuietOption,
) -> None:
    """Render music21 corpus scores to vocal / accompaniment / mixture stems with captions (needs the render extra)."""
    require_module("music21", "render", "render-corpus")
    require_module("fluidsynth", "render", "render-corpus")
    from ..corpus.render import render_corpus as render
    from ..corpus.scores import resolve_pieces
    from ..corpus.splits import SPLITS, select
    from ..corpus.synth import DEFAULT_SOUNDFONT

    if split is not None:
        check_choice("--split", split, SPLITS)
    if list_pieces:
        names, unmatched = resolve_pieces(pieces)
        if unmatched:
            raise DataError(f"no piece in the music21 corpus matches {', '.join(repr(p) for p in unmatched)}")
        typer.echo("\n".join(select(names, split) if split else names))
        return
    check_output_dir(out, what="--out", marker="captions.jsonl", reuse=True)
    report = render(pieces, out, seconds=seconds, seed=seed, workers=workers, transpose=transpose, progress=not quiet,
                    soundfont=soundfont or DEFAULT_SOUNDFONT, overwrite=overwrite, split=split)
    typer.echo(f"{out}: {len(report.rendered)} tracks, {report.audio_seconds:.1f} s of audio; {len(report.skipped)} skipped")
    for skipped in report.skipped:
        typer.echo(f"  skipped {skipped.piece}: {skipped.reason}")
    if not report.rendered:
        raise DataError(f"nothing was rendered: every requested piece was skipped (reasons above, and in {out}/render_report.json)")


def prepare(
    input_dir: Path = typer.Argument(..., help="Track folders with vocals + accompaniment (or drums/bass/other) stems; mixes with --separate."),
    out: Path = typer.Option(..., "--out", help="Cache folder: dataset/, codec.json, prepare_report.json. A rerun resumes it."),
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", help="Hub id, local DacModel directory, .pth (descript backend), or 'tiny' (random, for demos)."),
    codec_backend: str = BackendOption,
    separate: bool = typer.Option(False, "--separate", help="INPUT_DIR holds mixes: split each with Demucs htdemucs (needs the 'separation' extra)."),
    captions: Path = typer.Option(None, "--captions", help=".jsonl, .csv (track_id,caption) or datasets folder [default: INPUT_DIR/captions.jsonl if present]."),
    window_seconds: float = typer.Option(29.0, "--window-seconds", min=0.5, max=600.0, help="Window length."),
    hop_seconds: float = typer.Option(None, "--hop-seconds", min=0.1, max=600.0, help="Window hop [default: the window length]."),
    min_seconds: float = typer.Option(5.0, "--min-seconds", min=0.0, max=600.0, help="Keep a last, shorter window if it lasts at least this long."),
    quiet_dbfs: float = typer.Option(-25.0, "--quiet-dbfs", min=-120.0, max=0.0, help="Drop windows whose accompaniment RMS is below this."),
    vocal_margin_db: float = typer.Option(5.0, "--vocal-margin-db", min=-60.0, max=60.0, help="Drop windows whose vocal RMS exceeds the accompaniment's by more."),
    normalize_per: str = typer.Option("codebook", "--normalize-per", help=f"Latent statistics per {' or per '.join(NORMALIZE_PER)}."),
    workers: int = typer.Option(1, "--workers", min=1, max=MAX_WORKERS, help="Processes decoding audio (encoding runs in the main process)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=1024, help="Windows per encoder call."),
    quiet: bool = QuietOption,
) -> None:
    """Encode stems (or separated mixes) into a resumable latent cache for training."""
    from ..data.cache import CacheLayout
    from ..data.prepare import prepare_latent_cache
    from ..data.separation import DemucsSeparator
    from ..data.windows import WindowSettings

    check_choice("--normalize-per", normalize_per, NORMALIZE_PER)
    if min_seconds > window_seconds:
        raise DataError(f"--min-seconds {min_seconds:g} exceeds --window-seconds {window_seconds:g}; a last window cannot be longer than a window")
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: no such folder; pass the folder that holds the track folders (e.g. the --out of render-corpus)")
    check_output_dir(out, what="--out", marker="shards", reuse=True)
    windows = WindowSettings(window_seconds, hop_seconds, min_seconds, quiet_dbfs, vocal_margin_db)
    with library_progress(not quiet):
        separator = DemucsSeparator() if separate else None
        report = prepare_latent_cache(input_dir, out, load_codec(codec, codec_backend), codec, windows=windows,
                                      captions=captions, separator=separator, normalize_per=normalize_per,
                                      workers=workers, batch_size=batch_size, progress=not quiet)
    typer.echo(f"{out}: {report.kept_windows} windows ({report.kept_seconds / 3600:.2f} h) from {report.kept_tracks} "
               f"of {len(report.tracks)} tracks ({report.resumed} finished by an earlier run)")
    for label, counts in (("tracks skipped", report.skipped_tracks), ("windows skipped", report.skipped_windows)):
        if counts:
            typer.echo(f"  {label}: " + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items())))
    for folder in report.skipped_folders:
        typer.echo(f"  skipped folder {folder.path}: {folder.reason}")
    if report.uneven_stems:
        typer.echo(f"  {len(report.uneven_stems)} tracks have stems of different lengths (padded with silence; see the report)")
    if report.uncaptioned:
        typer.echo(f"  {len(report.uncaptioned)} tracks without captions (empty caption lists)")
    typer.echo(f"  details: {CacheLayout(out).report_file}")


def tokenize(
    cache: Path = typer.Argument(..., help="A latent cache made by `discodiff prepare` (from stems); tokens go to CACHE/semantic/."),
    stems: Path = typer.Option(..., "--stems", help="The track folders the cache was prepared from (prepare's INPUT_DIR, or a copy)."),
    features: str = typer.Option(..., "--features", help="SSL feature extractor: hubert (HuBERT, 16 kHz, 50 Hz) or mert (MERT, 24 kHz, 75 Hz)."),
    model: str = typer.Option(..., "--model", help="Hub id or save_pretrained directory of the extractor (e.g. facebook/hubert-base-ls960); tiny = a random tiny HuBERT built locally (tests)."),
    layer: int = typer.Option(None, "--layer", min=0, max=1000, help="Hidden layer to read [default: 9 for hubert, 7 for mert]."),
    k: int = typer.Option(500, "--k", min=2, max=32767, help="k-means clusters when the tokenizer is fitted here (a given --tokenizer keeps its own)."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="A semantic tokenizer .safetensors fitted on this extractor's features [default: fit one on the cache]."),
    noise_std: float = typer.Option(0.0, "--noise-std", min=0.0, max=10.0, help="SingSong noisy-vocal featurisation: noise of this × the vocal's RMS (0: off)."),
    fit_frames: int = typer.Option(200_000, "--fit-frames", min=2, max=100_000_000, help="Feature frames (vocal + accompaniment, evenly spaced windows) the tokenizer is fitted on."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the k-means fit and of the vocal noise."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=1024, help="Windows per extractor call."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace semantic tokens in CACHE/semantic computed with other settings."),
    quiet: bool = QuietOption,
) -> None:
    """Add semantic-token columns (k-means of HuBERT/MERT features of the stems) to a latent cache; a rerun resumes."""
    import json

    import torch

    from ..conditioning.semantic import SemanticTokenizer
    from ..conditioning.ssl import SSL_KINDS, resolve_ssl_features
    from ..data.cache import CacheLayout
    from ..data.tokenize import tokenize_cache

    check_choice("--features", features, tuple(SSL_KINDS))
    layout = CacheLayout(cache)
    try:
        layout.require_dataset()
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    if not stems.is_dir():
        raise DataError(f"--stems {stems}: no such folder; pass the track folders the cache was prepared from")
    if tokenizer is not None and not tokenizer.is_file():
        raise DataError(f"--tokenizer {tokenizer}: no such file; pass a semantic tokenizer .safetensors or leave it out to fit one")
    check_output_dir(layout.semantic_dir, what="CACHE/semantic", marker="shards", reuse=True)
    fixed = SemanticTokenizer.load(tokenizer) if tokenizer is not None else None
    with library_progress(not quiet):
        extractor = resolve_ssl_features(features, model, layer)
        if torch.cuda.is_available():
            extractor.model.to("cuda")
        source = {"kind": features, "id": model, "layer": extractor.layer}
        out = tokenize_cache(cache, stems, extractor, tokenizer=fixed, k=k, fit_frames=fit_frames, noise_std=noise_std,
                             seed=seed, source=source, progress=not quiet, overwrite=overwrite, batch_size=batch_size)
    info = json.loads(layout.semantic_info_file.read_text(encoding="utf-8"))
    typer.echo(f"{out}: semantic tokens of {info['windows']} windows from {info['tracks']} tracks at "
               f"{info['frame_rate']:.4g} Hz ({info['semantic_frames']} per window), k={info['k']}"
               f"{f', vocal noise {noise_std:g}' if noise_std else ''}")
