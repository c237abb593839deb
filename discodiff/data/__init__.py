"""Data: the stem-corpus layout (``layout``), caption file formats (``captions``), latent-cache preparation
(``prepare``, ``windows``, ``cache``, ``separation``), the training dataset (``dataset``) and the
text-embedding cache (``text_cache``).

Rendering music21 scores into a stem corpus lives in :mod:`discodiff.corpus` (it needs the optional
``render`` extra: music21, pyfluidsynth). Only the layout and the caption formats are imported here; the
other modules are imported from their own paths.
"""

from .captions import read_caption_records, read_caption_source, read_captions, write_captions
from .layout import StemPair, find_stem_pairs

__all__ = ["StemPair", "find_stem_pairs", "read_caption_records", "read_caption_source", "read_captions", "write_captions"]
