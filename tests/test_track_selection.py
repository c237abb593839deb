"""A folder of chosen rendered tracks (discodiff.corpus.selection, train/link_tracks.py): links, captions, split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from discodiff.corpus.selection import link_tracks, read_track_list
from discodiff.corpus.splits import load_split
from discodiff.data.captions import read_captions, write_captions
from discodiff.data.layout import scan_stem_folders
from discodiff.errors import DataError, ExistingWorkError

SPLIT = load_split()
TRAIN_PIECES = sorted(piece for piece, split in SPLIT.items() if split == "train")[:2]
VALIDATION_PIECE = sorted(piece for piece, split in SPLIT.items() if split == "validation")[0]
REPO = Path(__file__).resolve().parents[1]


def track_name(piece: str) -> str:
    return piece.replace("/", "-")


@pytest.fixture
def rendered(tmp_path):
    """Two renderings, each with the two train pieces and the validation piece, as render-corpus lays them out."""
    root = tmp_path / "rendered"
    for rendering in ("seed0", "seed1"):
        records = []
        for piece in (*TRAIN_PIECES, VALIDATION_PIECE):
            folder = root / rendering / track_name(piece)
            folder.mkdir(parents=True)
            for stem in ("vocals", "accompaniment"):
                sf.write(folder / f"{stem}.wav", np.zeros(441, dtype=np.float32), 44100)
            (folder / "metadata.json").write_text(json.dumps({"piece": piece}))
            records.append({"track_id": track_name(piece), "piece": piece, "captions": [f"{rendering} {piece}"]})
        write_captions(root / rendering / "captions.jsonl", records)
    return root


def test_the_folder_links_each_track_and_carries_its_captions_under_the_listed_name(rendered, tmp_path):
    tracks = [f"seed0/{track_name(TRAIN_PIECES[0])}", f"seed1/{track_name(TRAIN_PIECES[1])}"]
    out = link_tracks(tracks, rendered, tmp_path / "selected", "train")
    pairs, incomplete = scan_stem_folders(out)                   # what `discodiff prepare` reads
    assert [pair.track_id for pair in pairs] == tracks and incomplete == []
    for track in tracks:
        assert (out / track).is_symlink() and os.path.realpath(out / track) == str((rendered / track).resolve())
    assert read_captions(out / "captions.jsonl") == {
        tracks[0]: [f"seed0 {TRAIN_PIECES[0]}"], tracks[1]: [f"seed1 {TRAIN_PIECES[1]}"]}


def test_a_piece_of_the_other_split_is_refused_by_name_before_anything_is_written(rendered, tmp_path):
    track = f"seed0/{track_name(VALIDATION_PIECE)}"
    with pytest.raises(DataError, match=f"track '{track}' is {VALIDATION_PIECE}, a piece of the validation split"):
        link_tracks([f"seed0/{track_name(TRAIN_PIECES[0])}", track], rendered, tmp_path / "selected", "train")
    assert not (tmp_path / "selected").exists()
    out = link_tracks([track], rendered, tmp_path / "validation", "validation")
    assert list(read_captions(out / "captions.jsonl")) == [track]


@pytest.mark.parametrize("problem, match", [
    ("missing", "metadata.json is missing"),
    ("no caption", "has no line for"),
    ("twice", "is named more than once"),
    ("not nested", "name it '<rendering>/<track>'"),
])
def test_bad_track_lists_name_the_track_and_the_fix(rendered, tmp_path, problem, match):
    track = f"seed0/{track_name(TRAIN_PIECES[0])}"
    tracks = {"missing": ["seed0/bach-nothing"], "twice": [track, track], "not nested": ["seed0"],
              "no caption": [track]}[problem]
    if problem == "no caption":
        write_captions(rendered / "seed0" / "captions.jsonl", [{"track_id": "other", "captions": ["x"]}])
    with pytest.raises(DataError, match=match):
        link_tracks(tracks, rendered, tmp_path / "selected", "train")


def test_an_earlier_folder_is_replaced_only_with_overwrite_and_other_folders_never(rendered, tmp_path):
    first, second = (f"seed0/{track_name(piece)}" for piece in TRAIN_PIECES)
    out = link_tracks([first], rendered, tmp_path / "selected", "train")
    with pytest.raises(ExistingWorkError, match="--overwrite"):
        link_tracks([second], rendered, out, "train")
    link_tracks([second], rendered, out, "train", overwrite=True)
    assert list(read_captions(out / "captions.jsonl")) == [second] and not (out / first).exists()
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("keep")
    with pytest.raises(ExistingWorkError, match="non-empty folder"):
        link_tracks([first], rendered, unrelated, "train", overwrite=True)


def test_the_shipped_models_lists_are_bach_tracks_of_their_splits_and_the_script_links_them(rendered, tmp_path):
    lists = {split: read_track_list(REPO / "train" / "diffusion_tracks" / f"{split}.txt") for split in ("train", "validation")}
    assert (len(lists["train"]), len(lists["validation"])) == (80, 20)
    for split, tracks in lists.items():
        pieces = [f"bach/{track.split('/', 1)[1].removeprefix('bach-')}" for track in tracks]
        assert all(SPLIT[piece] == split for piece in pieces), split
    assert len({track.split("/")[1] for track in lists["train"]}) == 80     # no piece twice
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\nseed1/{track_name(TRAIN_PIECES[0])}   # trailing comment\n")
    result = subprocess.run([sys.executable, str(REPO / "train" / "link_tracks.py"), str(listed), "--rendered",
                             str(rendered), "--out", str(tmp_path / "out"), "--split", "validation"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "a piece of the train split, not of validation" in result.stderr
    result = subprocess.run([sys.executable, str(REPO / "train" / "link_tracks.py"), str(listed), "--rendered",
                             str(rendered), "--out", str(tmp_path / "out"), "--split", "train"],
                            capture_output=True, text=True, check=True)
    assert "1 train-split tracks" in result.stdout and (tmp_path / "out" / "captions.jsonl").is_file()
