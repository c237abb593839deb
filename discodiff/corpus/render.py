"""Render music21 corpus scores into a vocal / accompaniment / mixture stem corpus.

For every piece the melody part is sung by a General MIDI voice program (choir aahs or voice
oohs; no lyrics) and the other parts are played by instruments whose range fits them. Tempo,
instruments and an optional transposition are drawn from a generator seeded by ``(seed, piece)``,
so a piece renders the same whatever else is rendered and however many workers share the work.
``mixture = vocals + accompaniment`` sample for sample; a gain common to both stems keeps the
mixture's peak at or below :data:`PEAK_LIMIT`. Output follows :mod:`discodiff.data.layout`.
"""

from __future__ import annotations

import json
import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from music21 import stream
from scipy.io import wavfile
from tqdm.auto import tqdm

from ..data.captions import read_caption_records, write_captions
from ..data.layout import CAPTIONS_FILE, REPORT_FILE, StemPair
from ..errors import DataError, ExistingWorkError
from ..outputs import atomic_file
from .arrangement import Arrangement, draw_arrangement
from .corpus_captions import PieceDescription, caption_phrasings, period_for_composer
from .scores import (
    MelodySplit,
    PartNotes,
    UnrenderableScoreError,
    is_vocal_quartet,
    load_score,
    resolve_pieces,
    split_melody,
    time_signature,
)
from .splits import select
from .synth import DEFAULT_SOUNDFONT, GM_PROGRAM_NAMES, FluidSynthRenderer, InstrumentTrack, Note

DEFAULT_PIECES = ("bach/bwv66.6",)
RELEASE_TAIL_SECONDS = 2.0
PEAK_LIMIT = 0.9


@dataclass(frozen=True, eq=False)
class RenderedPiece:
    """Stems of one piece, mono float32 ``[T]`` at ``sample_rate``, plus what a caption needs."""

    vocals: np.ndarray
    accompaniment: np.ndarray
    sample_rate: int
    arrangement: Arrangement
    split: MelodySplit
    key: str
    time_signature: str | None
    gain: float

    @property
    def mixture(self) -> np.ndarray:
        """``vocals + accompaniment`` ``[T]``."""
        return self.vocals + self.accompaniment

    @property
    def duration_seconds(self) -> float:
        return len(self.vocals) / self.sample_rate


@dataclass(frozen=True)
class RenderedTrack:
    """A piece written to disk: its track id, length in seconds, captions and any warnings."""

    track_id: str
    piece: str
    duration_seconds: float
    captions: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedPiece:
    """A piece or pattern that produced no track, and why."""

    piece: str
    reason: str


@dataclass
class RenderReport:
    """Outcome of :func:`render_corpus`: tracks in request order; skipped patterns, then skipped pieces."""

    rendered: list[RenderedTrack] = field(default_factory=list)
    skipped: list[SkippedPiece] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        """Total length of the rendered tracks, in seconds."""
        return sum(track.duration_seconds for track in self.rendered)

    def to_dict(self) -> dict:
        """The ``render_report.json`` content (captions live in ``captions.jsonl``)."""
        rendered = [
            {"track_id": t.track_id, "piece": t.piece, "duration_seconds": t.duration_seconds, "warnings": list(t.warnings)}
            for t in self.rendered
        ]
        return {"rendered": rendered, "skipped": [asdict(s) for s in self.skipped]}


@dataclass(frozen=True)
class _RenderJob:
    piece: str
    out_dir: Path
    seconds: float | None
    seed: int
    transpose: int
    soundfont: Path


def track_id_for(piece: str) -> str:
    """Folder name of a corpus piece: ``'bach/bwv66.6' -> 'bach-bwv66.6'``."""
    return piece.strip("/").replace("/", "-")


def piece_generator(seed: int, piece: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the piece name."""
    return np.random.default_rng([seed, zlib.crc32(piece.encode("utf-8"))])


def _timed_notes(part: PartNotes, arrangement: Arrangement) -> list[Note]:
    seconds_per_quarter = 60.0 / arrangement.tempo_bpm
    return [
        Note(n.onset * seconds_per_quarter, (n.onset + n.duration) * seconds_per_quarter, pitch, n.velocity)
        for n in part.notes
        if 0 <= (pitch := n.pitch + arrangement.transpose_semitones) <= 127
    ]


def render_score(
    score: stream.Score,
    renderer: FluidSynthRenderer,
    rng: np.random.Generator,
    seconds: float | None = None,
    max_transpose: int = 0,
) -> RenderedPiece:
    """Render ``score`` to stems.

    Args:
        score: a music21 score with a melody part and at least one other part.
        renderer: the synth to play it on.
        rng: draws the :class:`Arrangement` (tempo, transposition, programs).
        seconds: keep at most this many seconds; ``None`` renders the whole score plus a
            :data:`RELEASE_TAIL_SECONDS` release tail.
        max_transpose: largest transposition in semitones, either direction (0: none).

    Raises:
        UnrenderableScoreError: no melody or nothing to accompany it.
    """
    split = split_melody(score)
    arrangement = draw_arrangement(split, rng, max_transpose)
    vocal_notes = _timed_notes(split.melody, arrangement)
    accompaniment_tracks = [
        InstrumentTrack(program, _timed_notes(part, arrangement))
        for part, program in zip(split.accompaniment, arrangement.accompaniment_programs)
    ]
    score_seconds = max(part.end for part in (split.melody, *split.accompaniment)) * 60.0 / arrangement.tempo_bpm
    length = score_seconds + RELEASE_TAIL_SECONDS if seconds is None else min(seconds, score_seconds + RELEASE_TAIL_SECONDS)
    num_samples = round(length * renderer.sample_rate)
    vocals = renderer.render([InstrumentTrack(arrangement.vocal_program, vocal_notes)], num_samples)
    accompaniment = renderer.render(accompaniment_tracks, num_samples)
    peak = float(np.max(np.abs(vocals + accompaniment), initial=0.0))
    gain = min(1.0, PEAK_LIMIT / peak) if peak > 0 else 1.0
    key = score.analyze("key").transpose(arrangement.transpose_semitones)
    return RenderedPiece(
        vocals=(vocals * np.float32(gain)).astype(np.float32),
        accompaniment=(accompaniment * np.float32(gain)).astype(np.float32),
        sample_rate=renderer.sample_rate,
        arrangement=arrangement,
        split=split,
        key=f"{key.tonic.name.replace('-', 'b')} {key.mode}",
        time_signature=time_signature(score),
        gain=gain,
    )


def describe(piece: str, rendered: RenderedPiece) -> PieceDescription:
    """The caption facts of a rendered corpus piece."""
    part_names = [rendered.split.melody.name, *(part.name for part in rendered.split.accompaniment)]
    instruments = dict.fromkeys(GM_PROGRAM_NAMES[p] for p in rendered.arrangement.accompaniment_programs)
    return PieceDescription(
        period=period_for_composer(piece.split("/")[0]),
        genre="chorale" if is_vocal_quartet(part_names) else "piece",
        key=rendered.key,
        tempo_bpm=rendered.arrangement.tempo_bpm,
        time_signature=rendered.time_signature,
        vocal_instrument=GM_PROGRAM_NAMES[rendered.arrangement.vocal_program],
        accompaniment_instruments=tuple(instruments),
    )


def track_metadata(job: _RenderJob, rendered: RenderedPiece) -> dict:
    """The ``metadata.json`` content of one track."""
    arrangement, split = rendered.arrangement, rendered.split
    return {
        "track_id": track_id_for(job.piece),
        "piece": job.piece,
        "seed": job.seed,
        "crop_seconds": job.seconds,
        "transpose_max": job.transpose,
        "tempo_bpm": arrangement.tempo_bpm,
        "transpose_semitones": arrangement.transpose_semitones,
        "key": rendered.key,
        "time_signature": rendered.time_signature,
        "vocals": {
            "part": split.melody.name,
            "chosen_by": "name" if split.melody_found_by_name else "highest mean pitch",
            "program": arrangement.vocal_program,
            "instrument": GM_PROGRAM_NAMES[arrangement.vocal_program],
        },
        "accompaniment": [
            {"part": part.name, "program": program, "instrument": GM_PROGRAM_NAMES[program]}
            for part, program in zip(split.accompaniment, arrangement.accompaniment_programs)
        ],
        "duration_seconds": rendered.duration_seconds,
        "sample_rate": rendered.sample_rate,
        "gain": rendered.gain,
        "soundfont": job.soundfont.name,
    }


def _render_job(job: _RenderJob) -> RenderedTrack | SkippedPiece:
    """Render one piece and write its folder; runs in a worker process with its own synth."""
    rng = piece_generator(job.seed, job.piece)
    try:
        rendered = render_score(load_score(job.piece), FluidSynthRenderer(job.soundfont), rng, job.seconds, job.transpose)
    except UnrenderableScoreError as err:
        return SkippedPiece(job.piece, str(err))
    track_id = track_id_for(job.piece)
    paths = StemPair.rendered(job.out_dir, track_id)
    paths.vocals.parent.mkdir(parents=True, exist_ok=True)
    for path, audio in ((paths.vocals, rendered.vocals), (paths.accompaniment[0], rendered.accompaniment), (paths.mixture, rendered.mixture)):
        with atomic_file(path) as temporary:
            wavfile.write(temporary, rendered.sample_rate, audio)  # float32 WAV; soundfile would stamp the time in it
    with atomic_file(paths.metadata) as temporary:
        temporary.write_text(json.dumps(track_metadata(job, rendered), indent=2) + "\n", encoding="utf-8")
    warnings = () if rendered.split.melody_found_by_name else (
        f"no part is named like a melody (Soprano, Cantus, Voice, ...); the highest part '{rendered.split.melody.name}' is sung",
    )
    captions = tuple(caption_phrasings(describe(job.piece, rendered), rng))
    return RenderedTrack(track_id, job.piece, rendered.duration_seconds, captions, warnings)


def _run_jobs(jobs: list[_RenderJob], workers: int) -> Iterator[RenderedTrack | SkippedPiece]:
    """Results of ``jobs`` in order, from this process or a pool of ``workers`` spawned processes."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_render_job, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch threads exist
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        yield from pool.map(_render_job, jobs)


SETTINGS_KEYS = {"seed": "seed", "crop_seconds": "seconds", "transpose_max": "transpose", "soundfont": "soundfont"}


def _conflicting_tracks(jobs: Sequence[_RenderJob]) -> list[str]:
    """Tracks already in the output folder that were rendered with other settings, as ``track (key old → new)``."""
    conflicts = []
    for job in jobs:
        metadata_file = StemPair.rendered(job.out_dir, track_id_for(job.piece)).metadata
        if not metadata_file.is_file():
            continue
        try:
            earlier = json.loads(metadata_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            conflicts.append(f"{track_id_for(job.piece)} (unreadable metadata.json)")
            continue
        now = {"seed": job.seed, "crop_seconds": job.seconds, "transpose_max": job.transpose, "soundfont": job.soundfont.name}
        changed = [f"{SETTINGS_KEYS[key]} {earlier.get(key)} → {value}" for key, value in now.items() if earlier.get(key) != value]
        if changed:
            conflicts.append(f"{track_id_for(job.piece)} ({', '.join(changed)})")
    return conflicts


def render_corpus(
    pieces: Sequence[str] = DEFAULT_PIECES,
    out_dir: str | Path = "rendered",
    seconds: float | None = None,
    seed: int = 0,
    workers: int = 1,
    transpose: int = 0,
    progress: bool = True,
    soundfont: str | Path = DEFAULT_SOUNDFONT,
    overwrite: bool = False,
    split: str | None = None,
) -> RenderReport:
    """Render corpus pieces to ``out_dir`` in the :mod:`~discodiff.data.layout` format.

    Train on ``bach/...`` pieces only: the other composers are held out for evaluation.

    Args:
        pieces: music21 corpus paths or globs without extension (``'bach/bwv66.6'``, ``'bach/bwv2*'``).
        out_dir: output root; existing tracks are kept and ``captions.jsonl`` is merged.
        seconds: keep at most this many seconds per piece (``None``: whole piece + release tail).
        seed: base seed; each piece draws from :func:`piece_generator` ``(seed, piece)``.
        workers: processes rendering in parallel (1: in this process). Workers are spawned, so
            a script calling this needs the ``if __name__ == "__main__":`` guard.
        transpose: transpose each piece by a random whole number of semitones in
            ``[-transpose, transpose]`` (0: off).
        progress: show a progress bar.
        soundfont: General MIDI ``.sf2`` file.
        split: keep only the Bach pieces of this split (``train`` or ``validation``, see
            :mod:`discodiff.corpus.splits`); None keeps every matched piece.
        overwrite: replace tracks that ``out_dir`` holds from a render with other settings (seed, seconds,
            transpose, soundfont); without it they are refused before any work. A track rendered again with
            the same settings comes out byte-identical.

    Raises:
        RendererUnavailableError: FluidSynth or the soundfont is missing (checked before any work).
        DataError: a setting is out of range, or a pattern matches no corpus piece (checked before any work).
        ExistingWorkError: a requested track exists with other settings and ``overwrite`` is False.
    """
    if seconds is not None and not 0 < seconds < float("inf"):
        raise DataError(f"seconds={seconds}: must be a positive number, or None for whole pieces")
    if workers < 1:
        raise DataError(f"workers={workers}: must be at least 1")
    if transpose < 0:
        raise DataError(f"transpose={transpose}: give the largest shift in semitones as a number >= 0")
    FluidSynthRenderer(soundfont)
    out_dir = Path(out_dir)
    names, unmatched = resolve_pieces(list(pieces))
    if unmatched:
        raise DataError(f"no piece in the music21 corpus matches {', '.join(repr(p) for p in unmatched)}; "
                        "list the pieces with `discodiff render-corpus --list 'bach/*'`")
    if split is not None:
        names = select(names, split)
        if not names:
            raise DataError(f"none of the pieces matching {', '.join(pieces)} is in the {split} split")
    report = RenderReport()
    jobs = [_RenderJob(name, out_dir, seconds, seed, transpose, Path(soundfont)) for name in names]
    conflicts = _conflicting_tracks(jobs)
    if conflicts and not overwrite:
        shown = "; ".join(conflicts[:3]) + (f"; and {len(conflicts) - 3} more" if len(conflicts) > 3 else "")
        raise ExistingWorkError(f"{out_dir} already holds {len(conflicts)} of these tracks rendered with other settings "
                                f"({shown}); pass --overwrite to replace them, or choose another --out")
    results = list(tqdm(_run_jobs(jobs, workers), total=len(jobs), desc="rendering", unit="piece", disable=not progress))
    captions_path = out_dir / CAPTIONS_FILE
    records = {r["track_id"]: r for r in read_caption_records(captions_path)} if captions_path.is_file() else {}
    for result in results:
        if isinstance(result, SkippedPiece):
            report.skipped.append(result)
        else:
            report.rendered.append(result)
            records[result.track_id] = {"track_id": result.track_id, "piece": result.piece, "captions": list(result.captions)}
    with atomic_file(captions_path) as temporary:
        write_captions(temporary, (records[key] for key in sorted(records)))
    with atomic_file(out_dir / REPORT_FILE) as temporary:
        temporary.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report
