"""The rendered corpus, the offline source of real music: music21 scores rendered to vocal / accompaniment
stems with captions, in the stem layout of :mod:`discodiff.data.layout`.

- ``scores``: find corpus pieces, pick the melody part, read notes.
- ``arrangement``: tempo, transposition and General MIDI instruments, drawn per piece.
- ``synth``: note lists → audio with FluidSynth.
- ``corpus_captions``: caption phrasings built from what the score and the arrangement say.
- ``render``: ``render_corpus`` / ``render_score``, deterministic per seed and resumable.
- ``selection``: ``link_tracks``, a folder of chosen rendered tracks of one split with their captions.

Rendering needs the optional ``render`` extra (music21, pyfluidsynth, scipy). The names below are
imported from their modules on first use, so ``import discodiff.corpus`` works without the extra; a
name from ``scores`` or ``render`` then raises the ``ImportError`` of the missing package.
The data layer (preparation, caption file formats, training-time reading) does not import this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "arrangement": ("Arrangement", "draw_arrangement"),
    "corpus_captions": ("PieceDescription", "caption_phrasings", "period_for_composer"),
    "render": ("DEFAULT_PIECES", "PEAK_LIMIT", "RELEASE_TAIL_SECONDS", "RenderReport", "RenderedPiece", "RenderedTrack",
               "SkippedPiece", "render_corpus", "render_score", "track_id_for"),
    "selection": ("link_tracks", "read_track_list"),
    "scores": ("MelodySplit", "PartNotes", "ScoreNote", "UnrenderableScoreError", "corpus_pieces", "load_score",
               "part_notes", "resolve_pieces", "split_melody"),
    "synth": ("DEFAULT_SOUNDFONT", "GM_PROGRAM_NAMES", "FluidSynthRenderer", "InstrumentTrack", "Note",
              "RendererUnavailableError"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from .arrangement import Arrangement, draw_arrangement
    from .corpus_captions import PieceDescription, caption_phrasings, period_for_composer
    from .render import (DEFAULT_PIECES, PEAK_LIMIT, RELEASE_TAIL_SECONDS, RenderedPiece, RenderedTrack, RenderReport,
                         SkippedPiece, render_corpus, render_score, track_id_for)
    from .selection import link_tracks, read_track_list
    from .scores import (MelodySplit, PartNotes, ScoreNote, UnrenderableScoreError, corpus_pieces, load_score, part_notes,
                         resolve_pieces, split_melody)
    from .synth import (DEFAULT_SOUNDFONT, GM_PROGRAM_NAMES, FluidSynthRenderer, InstrumentTrack, Note,
                        RendererUnavailableError)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
