"""Data: the stem-corpus layout, corpus rendering (``render``), latent-cache preparation
(``prepare``, ``windows``, ``cache``, ``caption_sources``, ``separation``), the training dataset
(``dataset``) and the text-embedding cache (``text_cache``).

Only the layout is imported here; the other modules are imported from their own paths
(:mod:`discodiff.data.render` needs the optional ``render`` extra: music21, pyfluidsynth).
"""

from .layout import StemPair, find_stem_pairs, read_captions, write_captions

__all__ = ["StemPair", "find_stem_pairs", "read_captions", "write_captions"]
