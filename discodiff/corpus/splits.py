"""The fixed validation split of the Bach pieces, and the composers held out for evaluation.

Only Bach pieces (``bach/…``) are used for training, tuning, tests and examples; every other composer of the
music21 corpus is held out for evaluation (:func:`is_held_out`). Inside Bach, a fixed 10% of the pieces is the
validation split that no model trains on. Many chorale melodies are harmonised several times under different
BWV numbers, so a rule on the piece id alone would put the same tune (the vocal stem) on both sides. The rule
is therefore on *tunes*:

1. A piece's tune is the transposition-invariant sequence of its first :data:`TUNE_NOTES` melodic intervals of
   the sung part (:func:`tune_signature`); pieces with the same signature form one group.
2. Groups are ordered by the sha256 of their alphabetically first piece id; groups are taken in that order
   into the validation split until it holds at least :data:`VALIDATION_SHARE` of the pieces.

The result for the installed music21 corpus is written once to ``bach_split.json`` (beside this module; see
:func:`write_split`) and read from there, so the split does not move when code changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataError

SPLIT_FILE = Path(__file__).with_name("bach_split.json")
SPLITS = ("train", "validation")
TRAINING_COMPOSER = "bach"
VALIDATION_SHARE = 0.10
TUNE_NOTES = 12
RULE = ("pieces grouped by tune (the first 12 melodic intervals of the sung part, transposition-invariant); groups "
        "ordered by sha256 of their first piece id and taken into validation until it holds >= 10% of the pieces")


def is_held_out(piece: str) -> bool:
    """True for every piece not by Bach: reserved for held-out evaluation, never trained or tuned on."""
    return piece.split("/", 1)[0] != TRAINING_COMPOSER


def tune_signature(piece: str) -> tuple[int, ...]:
    """The first :data:`TUNE_NOTES` melodic intervals (semitones) of the piece's sung part."""
    from .scores import load_score, split_melody

    pitches = [note.pitch for note in split_melody(load_score(piece)).melody.notes]
    intervals = [b - a for a, b in zip(pitches, pitches[1:]) if b != a]
    return tuple(intervals[:TUNE_NOTES])


def assign_split(signatures: dict[str, tuple[int, ...]], share: float = VALIDATION_SHARE) -> dict[str, str]:
    """``{piece: "train" | "validation"}`` by the tune rule of the module docstring."""
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for piece, signature in signatures.items():
        groups[signature].append(piece)
    ordered = sorted(groups.values(), key=lambda members: hashlib.sha256(min(members).encode()).hexdigest())
    split = dict.fromkeys(signatures, "train")
    held = 0
    for members in ordered:
        if held >= share * len(signatures):
            break
        for piece in members:
            split[piece] = "validation"
        held += len(members)
    return split


def write_split(pieces: Iterable[str], path: Path = SPLIT_FILE, progress: bool = True) -> dict[str, str]:
    """Compute the split of the Bach ``pieces`` (unparsable ones stay out) and write it to ``path``."""
    from tqdm.auto import tqdm

    from .scores import UnrenderableScoreError

    signatures, unusable = {}, {}
    for piece in tqdm(sorted(p for p in pieces if not is_held_out(p)), desc="tunes", unit="piece", disable=not progress):
        try:
            signatures[piece] = tune_signature(piece)
        except UnrenderableScoreError as err:
            unusable[piece] = str(err)
    split = assign_split(signatures)
    counts = {name: sum(1 for value in split.values() if value == name) for name in SPLITS}
    record = {"rule": RULE, "tune_notes": TUNE_NOTES, "validation_share": VALIDATION_SHARE, "pieces": counts,
              "tunes": len(set(signatures.values())), "split": dict(sorted(split.items())), "unusable": unusable}
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return split


def load_split(path: Path = SPLIT_FILE) -> dict[str, str]:
    """``{piece: split}`` of every usable Bach piece, as recorded in ``bach_split.json``."""
    if not path.is_file():
        raise DataError(f"{path}: the Bach split file is missing; restore it from the repository")
    return json.loads(path.read_text(encoding="utf-8"))["split"]


def split_of(piece: str) -> str:
    """``train`` or ``validation`` for a Bach piece; a DataError for held-out composers and unknown pieces."""
    if is_held_out(piece):
        raise DataError(f"{piece}: not a Bach piece; other composers are held out for evaluation and belong to no split")
    split = load_split()
    if piece not in split:
        raise DataError(f"{piece}: not in the recorded Bach split ({SPLIT_FILE.name}); it cannot be rendered (see its "
                        "'unusable' list) or is not in this music21 corpus")
    return split[piece]


def select(pieces: Sequence[str], split: str) -> list[str]:
    """The ``pieces`` of ``split`` (``train`` or ``validation``), in order; every piece must be a Bach piece."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    held_out = [piece for piece in pieces if is_held_out(piece)]
    if held_out:
        raise DataError(f"{held_out[0]} (and {len(held_out) - 1} more) are not Bach pieces: a split applies to Bach only, "
                        "other composers are held out for evaluation")
    recorded = load_split()
    return [piece for piece in pieces if recorded.get(piece) == split]
