"""Text captions for rendered corpus pieces, built from what the score and the arrangement say.

Every piece gets several phrasings of the same facts (style, key, tempo, metre, instruments), so a
text encoder sees varied wording; word choices come from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPOSER_PERIODS = {
    "bach": "Baroque",
    "handel": "Baroque",
    "corelli": "Baroque",
    "monteverdi": "early Baroque",
    "palestrina": "Renaissance",
    "josquin": "Renaissance",
    "haydn": "Classical",
    "mozart": "Classical",
    "beethoven": "Classical",
    "schubert": "Romantic",
    "schumann_robert": "Romantic",
    "chopin": "Romantic",
    "verdi": "Romantic",
}
TEMPO_WORDS = ((70, ("slow", "stately", "unhurried")), (85, ("moderate", "moderately paced", "walking-pace")))
FAST_TEMPO_WORDS = ("lively", "brisk", "flowing")
MELODY_WORDS = ("melody", "tune", "top line")


@dataclass(frozen=True)
class PieceDescription:
    """The facts a caption may state.

    Attributes:
        period: style period (``'Baroque'``) or ``None`` when unknown.
        genre: ``'chorale'``, ``'piece'``, …
        key: tonic and mode, e.g. ``'F# minor'``.
        tempo_bpm: quarter notes per minute.
        time_signature: e.g. ``'4/4'``, or ``None``.
        vocal_instrument: the instrument singing the melody, e.g. ``'choir aahs'``.
        accompaniment_instruments: distinct accompanying instruments, in score order.
    """

    period: str | None
    genre: str
    key: str
    tempo_bpm: int
    time_signature: str | None
    vocal_instrument: str
    accompaniment_instruments: tuple[str, ...]


def period_for_composer(composer: str) -> str | None:
    """Style period of a music21 corpus composer folder (``'bach'`` → ``'Baroque'``), ``None`` if unknown."""
    return COMPOSER_PERIODS.get(composer)


def tempo_word(tempo_bpm: float, rng: np.random.Generator) -> str:
    """A word for the pace: slow up to 70 BPM, moderate up to 85, lively above (synonym drawn by ``rng``)."""
    for limit, words in TEMPO_WORDS:
        if tempo_bpm <= limit:
            return str(rng.choice(words))
    return str(rng.choice(FAST_TEMPO_WORDS))


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption_phrasings(piece: PieceDescription, rng: np.random.Generator) -> list[str]:
    """Five captions stating ``piece``'s facts in different wording; deterministic for a given ``rng`` state."""
    style = " ".join(word for word in (piece.period, piece.genre) if word)
    pace = tempo_word(piece.tempo_bpm, rng)
    melody = str(rng.choice(MELODY_WORDS))
    accompaniment = _join([str(name) for name in rng.permutation(piece.accompaniment_instruments)])
    metre = f", {piece.time_signature}" if piece.time_signature else ""
    metre_time = f" in {piece.time_signature} time" if piece.time_signature else ""
    vocal = piece.vocal_instrument
    tags = [style.lower(), piece.key.lower(), f"{piece.tempo_bpm} bpm", pace]
    tags += [piece.time_signature] if piece.time_signature else []
    tags += [vocal, *piece.accompaniment_instruments]
    return [
        f"{style[0].upper()}{style[1:]} in {piece.key}, {piece.tempo_bpm} BPM{metre}: {vocal} {melody} over {accompaniment}.",
        f"A {pace} {style} in {piece.key} for {vocal} with {accompaniment} accompaniment.",
        f"{pace.capitalize()} {style}{metre_time} in {piece.key} at about {piece.tempo_bpm} BPM; "
        f"{accompaniment} accompany a {vocal} {melody}.",
        f"{vocal.capitalize()} carry the {melody} of a {style} in {piece.key} while {accompaniment} "
        f"play the lower parts at {piece.tempo_bpm} BPM.",
        ", ".join(tags),
    ]
