"""A folder of chosen rendered tracks with their captions: what ``discodiff prepare`` reads for a model trained on
part of a rendered corpus (the shipped model's 80 training and 20 validation tracks, say)::

    OUT/<rendering>/<track>   a symlink to RENDERED/<rendering>/<track>
    OUT/captions.jsonl        the tracks' caption records, track ids "<rendering>/<track>"

A track is named by its folder relative to the rendered root (``seed0/bach-bwv130.6``), as model cards list them;
its captions come from the ``captions.jsonl`` beside its folder (``render-corpus`` writes one per rendering). Each
track's piece (its ``metadata.json``) must be a Bach piece of the requested split, so a training folder cannot
hold a validation piece or another composer's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..data.captions import read_caption_records, write_captions
from ..data.layout import CAPTIONS_FILE, METADATA_FILE
from ..errors import DataError
from ..outputs import atomic_directory, check_output_dir
from .splits import SPLITS, split_of


def read_track_list(path: str | Path) -> list[str]:
    """The track names of a list file: one ``<rendering>/<track>`` per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such track list; write one '<rendering>/<track>' per line")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def link_tracks(tracks: Sequence[str], rendered_root: str | Path, out_dir: str | Path, split: str,
                overwrite: bool = False) -> Path:
    """Build ``out_dir`` (layout in the module docstring) from ``tracks`` under ``rendered_root``; returns it.

    Everything is checked before anything is written: every track exists with its metadata and captions and is a
    Bach piece of ``split``; no track is named twice. ``out_dir`` must be new or empty, or an earlier folder of
    this kind with ``overwrite``; it is built in a temporary folder and renamed into place.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    if not tracks:
        raise DataError("no tracks given: name at least one '<rendering>/<track>'")
    repeated = sorted({track for track in tracks if tracks.count(track) > 1})
    if repeated:
        raise DataError(f"track {repeated[0]} is named more than once (and {len(repeated) - 1} more); name each once")
    rendered_root = Path(rendered_root).resolve()
    records = [_track_record(rendered_root, track, split) for track in tracks]
    check_output_dir(out_dir, what="track folder", marker=CAPTIONS_FILE, overwrite=overwrite, flag="--overwrite")
    with atomic_directory(out_dir) as temporary:
        for track in tracks:
            link = temporary / track
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(rendered_root / track, link, target_is_directory=True)
        write_captions(temporary / CAPTIONS_FILE, records)
    return Path(out_dir)


def _track_record(rendered_root: Path, track: str, split: str) -> dict:
    """The caption record of ``track`` (track id = ``track``), after checking its folder, metadata and split."""
    folder = rendered_root / track
    if Path(track).is_absolute() or ".." in Path(track).parts or len(Path(track).parts) < 2:
        raise DataError(f"track '{track}': name it '<rendering>/<track>' relative to {rendered_root}")
    metadata_path = folder / METADATA_FILE
    if not metadata_path.is_file():
        raise DataError(f"track '{track}': {metadata_path} is missing; is it a track rendered by "
                        f"`discodiff render-corpus` under {rendered_root}?")
    piece = json.loads(metadata_path.read_text(encoding="utf-8")).get("piece")
    if not isinstance(piece, str):
        raise DataError(f"track '{track}': {metadata_path} names no piece")
    if split_of(piece) != split:
        raise DataError(f"track '{track}' is {piece}, a piece of the {split_of(piece)} split, not of {split}: "
                        f"remove it from the {split} list")
    captions_path = folder.parent / CAPTIONS_FILE
    if not captions_path.is_file():
        raise DataError(f"track '{track}': no {captions_path} beside its folder (render-corpus writes one)")
    records = {record["track_id"]: record for record in read_caption_records(captions_path)}
    if folder.name not in records:
        raise DataError(f"track '{track}': {captions_path} has no line for '{folder.name}'")
    return {**records[folder.name], "track_id": track}
