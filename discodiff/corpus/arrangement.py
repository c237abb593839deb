"""How a score is performed: tempo, transposition and General MIDI instruments, drawn at random.

The melody goes to a voice program; every other part gets an instrument whose playable range
holds it, so a bass line is never given to a flute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores import MelodySplit, PartNotes

TEMPO_RANGE_BPM = (60, 100)
VOCAL_PROGRAMS = (52, 53)  # choir aahs, voice oohs
ACCOMPANIMENT_RANGES = {  # GM program -> playable MIDI pitch range (lowest, highest)
    0: (21, 108),  # piano
    6: (29, 89),  # harpsichord
    19: (24, 96),  # church organ
    48: (28, 96),  # string ensemble
    40: (55, 100),  # violin
    41: (48, 88),  # viola
    42: (36, 76),  # cello
    43: (28, 60),  # contrabass
    32: (28, 55),  # acoustic bass
    46: (24, 103),  # harp
    60: (41, 77),  # french horn
    68: (58, 91),  # oboe
    70: (34, 75),  # bassoon
    71: (50, 91),  # clarinet
    73: (60, 96),  # flute
}
FALLBACK_PROGRAM = 0


@dataclass(frozen=True)
class Arrangement:
    """One performance of a score.

    Attributes:
        tempo_bpm: quarter notes per minute.
        transpose_semitones: shift applied to every pitch.
        vocal_program: GM program singing the melody.
        accompaniment_programs: GM program of each accompaniment part, in score order.
    """

    tempo_bpm: int
    transpose_semitones: int
    vocal_program: int
    accompaniment_programs: tuple[int, ...]


def draw_program(part: PartNotes, transpose: int, rng: np.random.Generator) -> int:
    """A GM program whose range holds the part shifted by ``transpose``; piano when none does."""
    low, high = part.pitch_range
    fitting = [p for p, (lo, hi) in ACCOMPANIMENT_RANGES.items() if lo <= low + transpose and high + transpose <= hi]
    return int(rng.choice(fitting)) if fitting else FALLBACK_PROGRAM


def draw_arrangement(split: MelodySplit, rng: np.random.Generator, max_transpose: int = 0) -> Arrangement:
    """A tempo in :data:`TEMPO_RANGE_BPM`, a transposition in ``[-max_transpose, max_transpose]``
    semitones, a voice program for the melody and a fitting instrument per accompaniment part."""
    tempo = int(rng.integers(TEMPO_RANGE_BPM[0], TEMPO_RANGE_BPM[1] + 1))
    transpose = int(rng.integers(-max_transpose, max_transpose + 1))
    vocal_program = int(rng.choice(VOCAL_PROGRAMS))
    programs = tuple(draw_program(part, transpose, rng) for part in split.accompaniment)
    return Arrangement(tempo, transpose, vocal_program, programs)
