"""Data: stem-corpus layout, corpus rendering, and (later) latent preparation and datasets.

Only the layout is imported here; :mod:`discodiff.data.render` needs the optional ``render``
extra (music21, pyfluidsynth) and is imported from its module.
"""

from .layout import StemPair, find_stem_pairs, read_captions, write_captions

__all__ = ["StemPair", "find_stem_pairs", "read_captions", "write_captions"]
