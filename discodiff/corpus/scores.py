"""Scores from the music21 corpus: find pieces, pick the melody part, read notes in quarter lengths.

Pieces are named by their corpus path without extension (``bach/bwv66.6``); a glob such as
``bach/bwv2*`` matches path segments like a shell does (``*`` never crosses ``/``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from music21 import corpus, harmony, stream
from music21.common import getCorpusFilePath

from ..errors import DataError

DEFAULT_VELOCITY = 90
MELODY_PART_WORDS = frozenset({"soprano", "sopran", "cantus", "canto", "superius", "discantus", "melody", "melodie", "voice", "vocal", "vocals"})
QUARTET_VOICE_WORDS = ({"soprano", "sopran"}, {"alto", "alt"}, {"tenor"}, {"bass", "basso"})


class UnrenderableScoreError(DataError):
    """A piece cannot be rendered (unparsable, no notes, no accompaniment); the message says why."""


@dataclass(frozen=True)
class ScoreNote:
    """A sounding pitch: onset and duration in quarter notes, MIDI pitch, MIDI velocity."""

    onset: float
    duration: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class PartNotes:
    """The notes of one score part, with the part's name as written in the score."""

    name: str
    notes: tuple[ScoreNote, ...]

    @property
    def pitch_range(self) -> tuple[int, int]:
        """Lowest and highest MIDI pitch."""
        pitches = [note.pitch for note in self.notes]
        return min(pitches), max(pitches)

    @property
    def end(self) -> float:
        """End of the last note, in quarter notes."""
        return max(note.onset + note.duration for note in self.notes)


@dataclass(frozen=True)
class MelodySplit:
    """A score divided into the sung melody and the accompanying parts."""

    melody: PartNotes
    accompaniment: tuple[PartNotes, ...]
    melody_found_by_name: bool


def corpus_pieces() -> list[str]:
    """Every piece in the music21 core corpus, as sorted paths without extension."""
    root = Path(getCorpusFilePath())
    return sorted({PurePosixPath(path.relative_to(root).with_suffix("")).as_posix() for path in corpus.getCorePaths()})


def _matches(piece: str, pattern: str) -> bool:
    piece_parts, pattern_parts = piece.split("/"), pattern.split("/")
    return len(piece_parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(part, glob) for part, glob in zip(piece_parts, pattern_parts)
    )


def resolve_pieces(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Expand corpus paths and globs (an entry may hold several, comma-separated):
    ``(pieces in pattern order without duplicates, patterns that match nothing)``."""
    available = corpus_pieces()
    pieces, unmatched = {}, []
    for pattern in (p.strip().strip("/") for entry in patterns for p in entry.split(",") if p.strip()):
        found = [piece for piece in available if _matches(piece, pattern)]
        if not found:
            unmatched.append(pattern)
        pieces.update(dict.fromkeys(found))
    return list(pieces), unmatched


def load_score(piece: str) -> stream.Score:
    """Parse a corpus piece; any parser failure becomes :class:`UnrenderableScoreError`."""
    try:
        score = corpus.parse(piece)
    except Exception as err:  # music21 parsers raise many unrelated types on broken files
        raise UnrenderableScoreError(f"music21 cannot parse it ({type(err).__name__}: {err})") from err
    if not isinstance(score, stream.Score) or not score.parts:
        raise UnrenderableScoreError("it parses to no score parts")
    return score


def part_notes(part: stream.Part) -> tuple[ScoreNote, ...]:
    """Sounding notes of ``part`` with ties merged (so tied notes are not re-struck).

    Grace notes (no duration of their own) and chord symbols (annotations, not played notes) are
    dropped; exported naively, both become notes that never end.
    """
    notes = []
    for element in part.stripTies().flatten().getElementsByClass(["Note", "Chord"]):
        if isinstance(element, harmony.Harmony) or element.duration.isGrace or element.quarterLength <= 0:
            continue
        velocity = element.volume.velocity or DEFAULT_VELOCITY
        for pitch in element.pitches:
            notes.append(ScoreNote(float(element.offset), float(element.quarterLength), pitch.midi, int(velocity)))
    return tuple(sorted(notes, key=lambda note: (note.onset, note.pitch)))


def clean_part_name(part: stream.Part) -> str:
    """The part name's first line (scores sometimes list doublings on further lines), or ``''``."""
    return re.split(r"[\r\n]", part.partName or "")[0].strip()


def _first_word(name: str) -> str:
    """Lower-cased leading letters: ``'Soprano 1' -> 'soprano'``."""
    return re.match(r"[a-z]*", name.lower()).group(0)


def split_melody(score: stream.Score) -> MelodySplit:
    """Pick the melody part by name (Soprano, Cantus, Voice, …); if no name matches, the part with
    the highest mean pitch. Parts without notes are dropped.

    Raises:
        UnrenderableScoreError: no part has notes, or nothing is left to accompany the melody.
    """
    parts = [PartNotes(clean_part_name(part), part_notes(part)) for part in score.parts]
    parts = [part for part in parts if part.notes]
    if not parts:
        raise UnrenderableScoreError("no part has pitched notes")
    by_name = [part for part in parts if _first_word(part.name) in MELODY_PART_WORDS]
    if by_name:
        melody = by_name[0]
    else:
        melody = max(parts, key=lambda part: sum(n.pitch for n in part.notes) / len(part.notes))
    accompaniment = tuple(part for part in parts if part is not melody)
    if not accompaniment:
        raise UnrenderableScoreError(f"only one part with notes ('{melody.name}'), nothing to accompany it")
    return MelodySplit(melody, accompaniment, melody_found_by_name=bool(by_name))


def is_vocal_quartet(part_names: list[str]) -> bool:
    """Whether the parts include soprano, alto, tenor and bass voices (a chorale setting)."""
    words = {_first_word(name) for name in part_names}
    return all(words & voice for voice in QUARTET_VOICE_WORDS)


def time_signature(score: stream.Score) -> str | None:
    """The first time signature, e.g. ``'3/4'``, or ``None`` when the score has none."""
    first = score.recurse().getElementsByClass("TimeSignature").first()
    return first.ratioString if first is not None else None
