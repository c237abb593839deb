"""The one place a text-encoder id is turned into a :class:`FrozenTextConditioner`: model configs and loaders.

``tiny`` is one fixed text encoder: :func:`~discodiff.conditioning.tiny.build_tiny_t5_conditioner` with seed 0
(whatever seed a model is built with, and whatever ``kind`` says: it is a T5 encoder), so text embeddings
cached with the tiny encoder fit every model whose config says ``text_encoder.id: tiny``. A different random
encoder is saved with ``save_pretrained`` and referenced by its path. Every other id or path goes to
:func:`~discodiff.conditioning.text.build_text_conditioner` of ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configuration import bounded
from .text import TEXT_CONDITIONERS, FlanT5Conditioner, FrozenTextConditioner, build_text_conditioner
from .tiny import build_tiny_t5_conditioner

TINY_TEXT_ENCODER = "tiny"
TINY_TEXT_ENCODER_SEED = 0


@dataclass
class TextEncoderConfig:
    """The frozen text encoder a model config references. ``kind``: ``t5`` (Flan-T5 encoder) or ``clap``; ``id``: hub
    id, local dir, or ``tiny``; prompts are cut at ``max_length`` tokens."""

    kind: str = bounded("t5", choices=tuple(TEXT_CONDITIONERS))
    id: str = "google/flan-t5-large"
    max_length: int = bounded(128, low=1, high=4096)


def load_text_encoder(kind: str, id_or_path: str | Path | None = None, max_length: int | None = None) -> FrozenTextConditioner:
    """The text encoder named ``id_or_path`` (None: the default id of ``kind``) with prompts cut at ``max_length``
    tokens (None: the encoder's default): ``tiny`` is always ``build_tiny_t5_conditioner(seed=0, max_length=…)``,
    anything else is ``build_text_conditioner(kind, id_or_path, max_length)``.

    Raises (for ids other than ``tiny``):
        ConditioningError: the encoder cannot be loaded (:class:`~discodiff.conditioning.ConditionerNotFoundError`
            when it is neither a local directory, nor cached, nor reachable).
        ValueError: ``kind`` is unknown, or ``id_or_path`` holds another kind of model.
    """
    if id_or_path is not None and str(id_or_path) == TINY_TEXT_ENCODER:
        return build_tiny_t5_conditioner(seed=TINY_TEXT_ENCODER_SEED,
                                         max_length=max_length or FlanT5Conditioner.default_max_length)
    return build_text_conditioner(kind, id_or_path, max_length=max_length)
