"""The on-disk layout of a vocal/accompaniment stem corpus: what writers produce and readers accept.

A rendered corpus looks like::

    ROOT/<track_id>/vocals.wav          mono float32 WAV, 44.1 kHz
    ROOT/<track_id>/accompaniment.wav
    ROOT/<track_id>/mixture.wav         vocals + accompaniment, sample for sample
    ROOT/<track_id>/metadata.json
    ROOT/captions.jsonl                 {"track_id": ..., "captions": [...], ...} per line (:mod:`.captions`)
    ROOT/render_report.json

Readers also accept MUSDB-style folders: ``vocals.*`` with either ``accompaniment.*`` or the
stems ``drums.* / bass.* / other.*`` (summed by the reader), with or without ``mixture.*``, in any
of wav/flac/ogg/mp3. A track id is the track folder's path relative to the root. A folder that holds
audio files but not both a vocal and an accompaniment is an :class:`IncompleteFolder`, reported with
the reason by :func:`scan_stem_folders` (hidden files such as ``._vocals.wav`` are ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
VOCALS = "vocals"
ACCOMPANIMENT = "accompaniment"
MIXTURE = "mixture"
INSTRUMENT_STEMS = ("drums", "bass", "other")
RENDERED_SUFFIX = ".wav"
METADATA_FILE = "metadata.json"
CAPTIONS_FILE = "captions.jsonl"
REPORT_FILE = "render_report.json"


@dataclass(frozen=True)
class StemPair:
    """One track's stems.

    Attributes:
        track_id: the track folder relative to the corpus root, ``/``-separated.
        vocals: the vocal stem.
        accompaniment: files whose sum is the accompaniment: one ``accompaniment.*`` file, or
            MUSDB's instrument stems (drums, bass, other — those present).
        mixture: the full mix, or ``None`` when the folder has none.
    """

    track_id: str
    vocals: Path
    accompaniment: tuple[Path, ...]
    mixture: Path | None

    @classmethod
    def rendered(cls, root: str | Path, track_id: str) -> StemPair:
        """The paths a renderer writes for ``track_id`` under ``root``."""
        folder = Path(root) / track_id
        return cls(
            track_id,
            vocals=folder / f"{VOCALS}{RENDERED_SUFFIX}",
            accompaniment=(folder / f"{ACCOMPANIMENT}{RENDERED_SUFFIX}",),
            mixture=folder / f"{MIXTURE}{RENDERED_SUFFIX}",
        )

    @property
    def metadata(self) -> Path:
        """The track's ``metadata.json`` (present for rendered tracks)."""
        return self.vocals.parent / METADATA_FILE


@dataclass(frozen=True)
class IncompleteFolder:
    """A folder with audio files that is not a usable track: ``path`` relative to the root, and why."""

    path: str
    reason: str


NO_VOCALS = f"no vocal stem ({VOCALS}.*)"
NO_ACCOMPANIMENT = f"no accompaniment stem ({ACCOMPANIMENT}.* or {'/'.join(INSTRUMENT_STEMS)}.*)"


def _stem_file(folder: Path, stem: str) -> Path | None:
    """The single ``stem.<audio suffix>`` file in ``folder``, ``None`` if absent."""
    found = [folder / f"{stem}{suffix}" for suffix in AUDIO_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several '{stem}' files ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def files_under(root: Path) -> Iterator[Path]:
    """Every file under ``root`` at any depth, following symlinked folders (a dataset assembled from links to
    track folders), each real folder visited once so that a link cycle ends."""
    visited = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders[:] = []
            continue
        visited.add(real)
        for name in names:
            yield Path(folder) / name


def _is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".") and path.is_file()


def scan_stem_folders(root: str | Path) -> tuple[list[StemPair], list[IncompleteFolder]]:
    """Every folder under ``root`` (any depth, ``root`` included) that holds audio files: the complete
    tracks (as :func:`find_stem_pairs` returns them) and the incomplete folders with the reason, both sorted.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        DataError: a folder holds the same stem in two formats.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory; pass the folder that holds the track folders")
    pairs, incomplete = [], []
    for folder in sorted({path.parent for path in files_under(root) if _is_audio_file(path)}):
        track_id = folder.relative_to(root).as_posix()
        vocals = _stem_file(folder, VOCALS)
        accompaniment = _stem_file(folder, ACCOMPANIMENT)
        stems = (accompaniment,) if accompaniment else tuple(filter(None, (_stem_file(folder, s) for s in INSTRUMENT_STEMS)))
        if vocals and stems:
            pairs.append(StemPair(track_id, vocals, stems, _stem_file(folder, MIXTURE)))
        elif vocals or stems:
            incomplete.append(IncompleteFolder(track_id, NO_ACCOMPANIMENT if vocals else NO_VOCALS))
        else:
            audio = sorted(path.name for path in folder.iterdir() if _is_audio_file(path))
            listed = ", ".join(audio[:3]) + (f" and {len(audio) - 3} more" if len(audio) > 3 else "")
            incomplete.append(IncompleteFolder(track_id, f"no recognised stems ({VOCALS}.* with {ACCOMPANIMENT}.* or "
                                                         f"{'/'.join(INSTRUMENT_STEMS)}.*) among {listed}"))
    return sorted(pairs, key=lambda pair: pair.track_id), incomplete


def find_stem_pairs(root: str | Path) -> list[StemPair]:
    """Every track folder under ``root`` (any depth) with a vocal stem and an accompaniment, sorted by id.
    :func:`scan_stem_folders` also returns the folders left out and why.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: a folder holds the same stem in two formats.
    """
    return scan_stem_folders(root)[0]
