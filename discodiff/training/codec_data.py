"""The codec task's data: mono clips of rendered stems, split by the fixed Bach split (data discipline).

``data.data_dir`` (and ``data.validation_dir``) is a folder of rendered track folders at any depth (e.g.
``/work/data/bach`` holding ``seed0/…``, ``seed1/…``), each with ``vocals.wav``, ``accompaniment.wav``,
``mixture.wav`` and a ``metadata.json`` naming its ``piece`` (:mod:`discodiff.data.layout`). Every stem of every
track is a separate item source (``stems``: which of them). Before anything is read, :func:`scan_tracks` sorts
the tracks by :func:`discodiff.corpus.splits.split_of` of their piece and refuses, naming them, track folders
that are not finished rendered Bach tracks: no ``metadata.json`` or no ``piece`` (not rendered here, or a render in
progress), a piece of another composer (held out for evaluation) or a piece missing from the recorded split, and
incomplete stem folders. Hidden folders (temporary files of a writer) are skipped.

:class:`StemClips` with ``split="train"`` serves only train-split tracks: one item per (track, stem) and epoch, a
random crop of ``clip_samples`` drawn from ``numpy.random.default_rng([seed, epoch, index])`` — ``tries`` candidate
offsets, the first whose RMS reaches ``min_rms_db`` dBFS (else the loudest: a salient excerpt, as DAC's data
loader picks crops above a loudness cutoff). With ``split="validation"`` it serves validation-split tracks at fixed
offsets (the middle of the stem, else the first of a fixed list of other positions that is loud enough), ordered so
that the first items are different tracks with the stems taking turns. Only the crop's frames are read
(``soundfile`` start/stop); stems shorter than a clip are zero-padded. Items::

    audio      float32 [1, clip_samples]   mono (channels averaged; several accompaniment files summed)
    track_ids  str                         the track folder relative to the data dir
    captions   str                         "<stem>: <track id>"
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from discodiff.corpus.splits import SPLITS, split_of
from discodiff.data.layout import ACCOMPANIMENT, METADATA_FILE, MIXTURE, VOCALS, StemPair, scan_stem_folders
from discodiff.errors import ConfigError, DataError

STEMS = (VOCALS, ACCOMPANIMENT, MIXTURE)
DEFAULT_MIN_RMS_DB = -50.0
DEFAULT_TRIES = 8
VALIDATION_OFFSETS = (0.5, 0.25, 0.75, 0.125, 0.875)  # fractions of (stem length − clip length), in order of preference
RENDER_HINT = ("only finished rendered Bach tracks (`discodiff render-corpus`: metadata.json with a 'piece' of the "
               "recorded split) may train the codec; move the others out of the data dir")


@dataclass(frozen=True)
class StemSource:
    """One stem of one track: the files whose sum it is and its length in frames (the shortest file's)."""

    track_id: str
    stem: str
    paths: tuple[Path, ...]
    frames: int


def _visible(track_id: str) -> bool:
    return track_id == "." or not any(part.startswith(".") for part in track_id.split("/"))


def track_piece(pair: StemPair) -> tuple[str | None, str | None]:
    """``(piece, None)`` from the track's ``metadata.json``, or ``(None, why it has none)``."""
    path = pair.metadata
    if not path.is_file():
        return None, f"no {METADATA_FILE} (not a rendered track, or its render is unfinished)"
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{METADATA_FILE} is unreadable ({err})"
    piece = metadata.get("piece") if isinstance(metadata, dict) else None
    if not isinstance(piece, str) or not piece:
        return None, f"{METADATA_FILE} names no 'piece'"
    return piece, None


def scan_tracks(root: str | Path) -> dict[str, list[StemPair]]:
    """``{"train": [...], "validation": [...]}``: the rendered tracks under ``root`` (any depth) by the split of their
    piece, sorted by track id; a :class:`DataError` naming every track folder that may not be used (see the module
    docstring)."""
    root = Path(root)
    try:
        pairs, incomplete = scan_stem_folders(root)
    except FileNotFoundError as err:
        raise DataError(str(err)) from err
    problems = [f"{folder.path}: {folder.reason}" for folder in incomplete if _visible(folder.path)]
    splits: dict[str, list[StemPair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        if not _visible(pair.track_id):
            continue
        piece, problem = track_piece(pair)
        if piece is not None:
            try:
                splits[split_of(piece)].append(pair)
            except DataError as err:
                problem = str(err)
        if problem:
            problems.append(f"{pair.track_id}: {problem}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"{root}: {len(problems)} track folder(s) refused: {'; '.join(problems[:3])}{more}; {RENDER_HINT}")
    return splits


def read_crop(source: StemSource, start: int, length: int) -> np.ndarray:
    """``length`` mono samples of ``source`` from ``start`` (reading only those frames), zero-padded at the end."""
    import soundfile as sf

    total = np.zeros(length, dtype=np.float32)
    for path in source.paths:
        data, _ = sf.read(str(path), start=start, frames=length, dtype="float32", always_2d=True)
        total[: data.shape[0]] += data.mean(axis=1)
    return total


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-20))


def stem_source(track_id: str, stem: str, paths: Sequence[Path], sample_rate: int) -> StemSource:
    """A stem (the sum of ``paths``) with its usable length in samples (the shortest file); a DataError naming the file
    for unreadable audio or another sample rate than ``sample_rate`` (the codec's)."""
    import soundfile as sf

    frames = []
    for path in paths:
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError) as err:  # soundfile raises LibsndfileError (a RuntimeError)
            raise DataError(f"{path}: unreadable audio ({err}); render the track again or remove it") from err
        if info.samplerate != sample_rate:
            raise DataError(f"{path}: {info.samplerate} Hz, but the codec runs at {sample_rate} Hz; render the "
                            "corpus at the codec's rate or use a codec of that rate")
        frames.append(info.frames)
    return StemSource(track_id, stem, tuple(paths), min(frames))


class StemClips(Dataset):
    """Mono clips of the stems of the rendered tracks of one split under ``data_dir`` (see the module docstring).

    Args:
        data_dir: a folder of rendered track folders, at any depth.
        clip_samples: samples per clip (the task makes it a multiple of the codec's hop).
        split: ``train`` (random crops, a function of (seed, epoch, index)) or ``validation`` (fixed crops).
        sample_rate: the codec's; every stem must have it.
        seed: base seed of the training crops.
        stems: which stems are item sources (default all: vocals, accompaniment, mixture).
        min_rms_db: a crop at least this loud (RMS, dBFS) is taken; else the loudest candidate.
        tries: candidate offsets per training item.
    """

    def __init__(self, data_dir: str | Path, clip_samples: int, split: str, sample_rate: int, seed: int = 0,
                 stems: list[str] | tuple[str, ...] = STEMS, min_rms_db: float = DEFAULT_MIN_RMS_DB,
                 tries: int = DEFAULT_TRIES):
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        stems = list(stems)
        if not stems or len(set(stems)) != len(stems) or not set(stems) <= set(STEMS):
            raise ConfigError(f"data.options.stems must list some of {', '.join(STEMS)} once each, got {stems}")
        if not isinstance(tries, int) or isinstance(tries, bool) or not 1 <= tries <= 1000:
            raise ConfigError(f"data.options.tries must be an integer in [1, 1000], got {tries!r}")
        if not isinstance(min_rms_db, (int, float)) or isinstance(min_rms_db, bool) or not -400 <= min_rms_db <= 0:
            raise ConfigError(f"data.options.min_rms_db must be a number of dBFS in [-400, 0], got {min_rms_db!r}")
        if clip_samples < 1:
            raise ConfigError(f"clip_samples must be >= 1, got {clip_samples}")
        self.data_dir, self.clip_samples, self.split, self.sample_rate = Path(data_dir), int(clip_samples), split, int(sample_rate)
        self.seed, self.epoch, self.stems = int(seed), 0, stems
        self.min_rms_db, self.tries = float(min_rms_db), int(tries)
        tracks = scan_tracks(self.data_dir)[split]
        if not tracks:
            raise DataError(f"{self.data_dir} holds no rendered tracks of the Bach {split} split; render them with "
                            f"`discodiff render-corpus --split {split}` (or point data.data_dir / data.validation_dir elsewhere)")
        self.track_ids = [pair.track_id for pair in tracks]
        per_track = [[self._source(pair, stem) for stem in stems] for pair in tracks]
        if split == "train":
            self.sources = [source for sources in per_track for source in sources]
        else:  # the first items are different tracks, the stems taking turns
            count = len(stems)
            self.sources = [per_track[t][(t + j) % count] for j in range(count) for t in range(len(per_track))]

    def _source(self, pair: StemPair, stem: str) -> StemSource:
        paths = {VOCALS: (pair.vocals,), ACCOMPANIMENT: pair.accompaniment,
                 MIXTURE: (pair.mixture,) if pair.mixture else ()}[stem]
        if not paths:
            raise DataError(f"{self.data_dir / pair.track_id}: no {stem} stem; drop '{stem}' from data.options.stems "
                            "or render the track again")
        return stem_source(pair.track_id, stem, paths, self.sample_rate)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def offsets(self, index: int) -> list[int]:
        """The candidate crop starts of item ``index``, in order of preference."""
        span = max(self.sources[index].frames - self.clip_samples, 0)
        if self.split == "validation":
            return [round(fraction * span) for fraction in VALIDATION_OFFSETS]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return [int(start) for start in rng.integers(0, span + 1, size=self.tries)]

    def __getitem__(self, index: int) -> dict:
        source = self.sources[index]
        best, best_db = None, -np.inf
        for start in self.offsets(index):
            audio = read_crop(source, start, self.clip_samples)
            level = rms_db(audio)
            if level >= self.min_rms_db:
                best = audio
                break
            if level > best_db:
                best, best_db = audio, level
        return {"audio": torch.from_numpy(best)[None], "track_ids": source.track_id,
                "captions": f"{source.stem}: {source.track_id}"}
