"""The one place a codec id is turned into a :class:`DacCodec`: model configs, ``prepare`` and the codec commands.

``tiny`` is one fixed codec: :func:`~discodiff.codec.tiny.build_tiny_codec` with seed 0, whatever seed a model
is built with, so a latent cache prepared with ``--codec tiny`` fits every model whose config says
``codec.id: tiny``. A different tiny codec is made with ``discodiff tiny-codec DIR --seed N`` and referenced by
its path. Every other id or path goes to :meth:`DacCodec.from_pretrained` (hub id, ``save_pretrained``
directory, or ``.pth`` with the ``descript`` backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configuration import bounded
from .backends import BACKENDS
from .dac_codec import DacCodec
from .tiny import build_tiny_codec

TINY_CODEC = "tiny"
TINY_CODEC_SEED = 0


@dataclass
class CodecConfig:
    """The codec a model config references. ``id``: hub id, local dir, ``.pth`` (``backend: descript``) or ``tiny``
    (built locally, random)."""

    id: str = "descript/dac_44khz"
    backend: str = bounded("transformers", choices=BACKENDS)


def load_codec(id_or_path: str | Path, backend: str = "transformers") -> DacCodec:
    """The codec named ``id_or_path``: ``tiny`` is always ``build_tiny_codec(seed=0)`` (a transformers codec;
    ``backend`` is not used for it), anything else is ``DacCodec.from_pretrained(id_or_path, backend)``.

    Raises:
        CodecError: the codec cannot be loaded (:class:`~discodiff.codec.CodecNotFoundError` when it is
            neither a local path, nor cached, nor reachable).
    """
    if str(id_or_path) == TINY_CODEC:
        return build_tiny_codec(seed=TINY_CODEC_SEED)
    return DacCodec.from_pretrained(id_or_path, backend)
