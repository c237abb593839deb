"""``discodiff captions …``: build a caption dataset over a work folder (:mod:`discodiff.captions`).

    discodiff captions tags CLIPS --work WORK            clip list + tags (metadata; tempo and key from the audio)
    discodiff captions describe CLIPS --work WORK --model ID | --endpoint URL --endpoint-model NAME
    discodiff captions rephrase --work WORK [--model ID | --endpoint URL …]   (no model: the template fallback)
    discodiff captions rank --work WORK --reference DIR|FILE.npz --embedder NAME [--keep-top 0.2]
    discodiff captions release --work WORK --out DATASET [--audio none|path|bytes] [--push REPO]
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..errors import ConfigError
from .common import QuietOption, check_choice, library_progress
from .errors import reports_errors
from .model import MAX_SEED

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_show_locals=False,
                  help="Caption datasets: describe, tag, rephrase, rank by likelihood, release (resumable, sharded with "
                       "accelerate launch).")
MAPPINGS = ("rendered", "jamendo", "fma")
AUDIO_MODES = ("none", "path", "bytes")

ClipsArgument = typer.Argument(..., help="A rendered corpus (discodiff render-corpus) or a folder of audio files.")
WorkOption = typer.Option(..., "--work", help="The work folder: new, or one an earlier step wrote (resumed).")
SplitOption = typer.Option("all", "--split", help="Of a rendered corpus: train, validation or all.")
MetadataOption = typer.Option(None, "--metadata", help="JSONL, CSV/TSV or datasets folder with a row per clip (by id).")
IdColumnOption = typer.Option("id", "--id-column", help="The id column of --metadata (track_id is tried as well).")
SourceOption = typer.Option(None, "--source", help="Where the audio comes from, per row [default: the folder].")
LicenseOption = typer.Option(None, "--license", help="The audio's licence (SPDX id) [default: mit for rendered, unknown].")
ModelOption = typer.Option(None, "--model", help="A transformers model: hub id or local directory.")
EndpointOption = typer.Option(None, "--endpoint", help="An OpenAI-compatible endpoint URL (e.g. http://127.0.0.1:8000/v1).")
EndpointModelOption = typer.Option(None, "--endpoint-model", help="The model name the endpoint serves.")
SeedOption = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Clip i is drawn with seed + i.")
BatchOption = typer.Option(4, "--batch-size", min=1, max=256, help="Clips per model call (part of the results' settings).")
DeviceOption = typer.Option(None, "--device", help="cpu or cuda [default: cuda when available].")
OverwriteOption = typer.Option(False, "--overwrite", help="Redo a step whose earlier results used other settings.")


def _work_for(clips: Path, work: Path, split: str, metadata: Path | None, id_column: str, source: str | None,
              license: str | None):
    from ..captions.clips import SPLITS, collect_clips
    from ..captions.tags import read_metadata
    from ..captions.work import CaptionWork

    check_choice("--split", split, SPLITS)
    rows = read_metadata(metadata, id_column) if metadata is not None else None
    return CaptionWork.create(work, collect_clips(clips, split=split, metadata=rows, source=source, license=license))


def _device(device: str | None) -> str:
    from ..evaluation.protocol import resolve_device

    return resolve_device(device)


def tags(clips: Path = ClipsArgument, work: Path = WorkOption, split: str = SplitOption,
         metadata: Path = MetadataOption, id_column: str = IdColumnOption, mapping: str = typer.Option(
             "rendered", "--mapping", help="How metadata columns become tags: rendered, jamendo, fma."),
         estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="Fill missing tempo and key from the audio."),
         source: str = SourceOption, license: str = LicenseOption, overwrite: bool = OverwriteOption,
         quiet: bool = QuietOption) -> None:
    """Make (or reuse) the work folder for CLIPS and tag every clip."""
    from ..captions.steps import tags_step

    check_choice("--mapping", mapping, MAPPINGS)
    caption_work = _work_for(clips, work, split, metadata, id_column, source, license)
    tags_step(caption_work, mapping, estimate=estimate, overwrite=overwrite, progress=not quiet)
    typer.echo(f"{work}: tags of {len(caption_work.clips)} clips")


def describe(clips: Path = ClipsArgument, work: Path = WorkOption, split: str = SplitOption,
             metadata: Path = MetadataOption, id_column: str = IdColumnOption, model: str = ModelOption,
             endpoint: str = EndpointOption, endpoint_model: str = EndpointModelOption, seed: int = SeedOption,
             batch_size: int = BatchOption, device: str = DeviceOption, source: str = SourceOption,
             license: str = LicenseOption, overwrite: bool = OverwriteOption, quiet: bool = QuietOption) -> None:
    """A raw description per clip from an audio-language model or an endpoint."""
    from ..captions.describe import make_captioner
    from ..captions.steps import describe_step

    caption_work = _work_for(clips, work, split, metadata, id_column, source, license)
    with library_progress(not quiet):
        captioner = make_captioner(model, endpoint, endpoint_model, device=_device(device) if model else None)
        describe_step(caption_work, captioner, seed=seed, batch_size=batch_size, overwrite=overwrite, progress=not quiet)
    typer.echo(f"{work}: descriptions of {len(caption_work.clips)} clips")


def rephrase(work: Path = WorkOption, model: str = ModelOption, endpoint: str = EndpointOption,
             endpoint_model: str = EndpointModelOption, num_captions: int = typer.Option(
                 3, "--num-captions", min=1, max=20, help="Captions asked for per clip."),
             seed: int = SeedOption, batch_size: int = BatchOption, device: str = DeviceOption,
             overwrite: bool = OverwriteOption, quiet: bool = QuietOption) -> None:
    """Captions from each clip's description and tags (tags take precedence), filtered; no model: the template."""
    from ..captions.rephrase import make_rephraser
    from ..captions.steps import rephrase_step
    from ..captions.work import CaptionWork

    caption_work = CaptionWork.open(work)
    with library_progress(not quiet):
        rephraser = make_rephraser(model, endpoint, endpoint_model, device=_device(device) if model else None)
        records = rephrase_step(caption_work, rephraser, num_captions=num_captions, seed=seed, batch_size=batch_size,
                                overwrite=overwrite, progress=not quiet)
    kept = sum(len(records.get(clip.id)["captions"]) for clip in caption_work.clips)
    typer.echo(f"{work}: {kept} captions kept for {len(caption_work.clips)} clips")


def rank(work: Path = WorkOption, reference: Path = typer.Option(
             ..., "--reference", help="Reference clips (a folder, as CLIPS) or a saved reference.npz of an earlier rank."),
         reference_split: str = typer.Option("all", "--reference-split", help="Of a rendered reference corpus."),
         embedder: str = typer.Option("clap", "--embedder", help="Audio embedder: clap (the paper's), basic-pitch, "
                                      "crepe, codec, mert, hubert, encodec."),
         embedder_codec: str = typer.Option(None, "--embedder-codec", help="The codec of --embedder codec."),
         embedder_clap: str = typer.Option(None, "--embedder-clap", help="The CLAP model of --embedder clap."),
         keep_top: float = typer.Option(0.2, "--keep-top", help="Share of the clips kept for the release, in (0, 1] "
                                        "(the paper's 0.2; 1 keeps all)."),
         device: str = DeviceOption, overwrite: bool = OverwriteOption, quiet: bool = QuietOption) -> None:
    """Rank the clips by the log-likelihood of their audio embeddings under a Gaussian of a reference collection."""
    from ..captions.clips import collect_clips
    from ..captions.steps import RANKING_FILE, rank_step
    from ..captions.work import CaptionWork
    from .evaluate import build_embedders, embedder_names

    names = embedder_names([embedder], embedder_codec, embedder_clap, None)
    caption_work = CaptionWork.open(work)
    source = reference if reference.suffix == ".npz" else collect_clips(reference, split=reference_split)
    with library_progress(not quiet):
        built = build_embedders(names, embedder_codec, embedder_clap, None, _device(device))[embedder]
        rows = rank_step(caption_work, built, source, keep_top_share=keep_top, overwrite=overwrite, progress=not quiet)
    typer.echo(f"{work / 'rank' / RANKING_FILE}: {len(rows)} clips ranked (best: {rows[0]['id']}, worst: "
               f"{rows[-1]['id']}); the top {keep_top:g} kept (kept.csv)")


def release(work: Path = WorkOption, out: Path = typer.Option(..., "--out", help="The dataset folder to write."),
            audio: str = typer.Option("none", "--audio", help="Audio in the dataset: none, path or bytes."),
            name: str = typer.Option("discodiff captions", "--name", help="The dataset's pretty name."),
            license: str = typer.Option(None, "--license", help="The dataset's licence [default: the clips' if one]."),
            license_details: str = typer.Option("", "--license-details", help="Licence notes for the card."),
            audio_root: Path = typer.Option(None, "--audio-root", help="With --audio path: the folder stored paths are "
                                            "relative to [default: the folder holding every clip]."),
            push: str = typer.Option(None, "--push", help="Also upload to this hub dataset repo (user/name)."),
            overwrite: bool = OverwriteOption, quiet: bool = QuietOption) -> None:
    """Write the Hugging Face dataset folder (parquet shards + dataset card); --push uploads it."""
    from ..captions.release import push_dataset, write_dataset
    from ..captions.steps import card_info, release_rows
    from ..captions.work import CaptionWork

    check_choice("--audio", audio, AUDIO_MODES)
    caption_work = CaptionWork.open(work)
    rows, summary = release_rows(caption_work, audio=audio != "none")
    info = card_info(caption_work, summary, name, license, license_details)
    if audio != "none" and audio_root is None:
        audio_root = Path(os.path.commonpath([Path(clip.audio).parent for clip in caption_work.clips]))
    sizes = write_dataset(out, rows, audio=audio, card=info, overwrite=overwrite, audio_root=audio_root,
                          progress=not quiet)
    typer.echo(f"{out}: {sizes.rows} rows, {sizes.captions} captions, {sizes.shards} shard(s)")
    if push:
        typer.echo(push_dataset(out, push))


COMMANDS = {"tags": tags, "describe": describe, "rephrase": rephrase, "rank": rank, "release": release}
for command_name, command in COMMANDS.items():
    app.command(command_name)(reports_errors(command))
