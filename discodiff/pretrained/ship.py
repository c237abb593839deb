"""Turn an exported model directory (of any generating family) into a shipped one (``train/ship.py`` runs it).

The codec, text encoder and any other referenced encoder are bundled into the directory (whatever ``sources``
referenced), every weight is
stored in fp16, the card becomes ``README.md`` and ``checksums.json`` records every file. The result must stay
under :data:`~discodiff.pretrained.MAX_SHIPPED_BYTES`; it is built aside and renamed into place.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import ConfigError, OutputError
from ..outputs import atomic_directory, check_output_dir
from . import MAX_SHIPPED_BYTES, directory_bytes, shipped_model_dir, verify_checksums, write_checksums

MODEL_MARKER = "pipeline.json"


def ship_model(model_dir: str | Path, card: str | Path, out_dir: str | Path | None = None,
               overwrite: bool = False) -> Path:
    """Write ``model_dir`` (a model directory of a family that generates music) as a shipped model into ``out_dir``
    (default: :func:`~discodiff.pretrained.shipped_model_dir`); returns ``out_dir``."""
    from ..pipeline_utils import directory_family, load_pipeline

    out_dir = Path(out_dir) if out_dir is not None else shipped_model_dir()
    card = Path(card)
    if not card.is_file():
        raise ConfigError(f"--card {card}: no such file; write the model card (markdown) first")
    check_output_dir(out_dir, what="shipped model directory", marker=MODEL_MARKER, overwrite=overwrite)
    directory_family(model_dir).check_generates(f"{model_dir}")
    pipeline = load_pipeline(model_dir)
    for source in pipeline.sources.values():
        source["bundled"] = True
    with _diffusers_warnings_off():  # diffusers advises torch_dtype at load time on every cast; the loader does that
        pipeline.to(dtype=torch.float16)
    with atomic_directory(out_dir) as build:
        pipeline.save_pretrained(build)
        shutil.copyfile(card, build / "README.md")
        write_checksums(build)
        size = directory_bytes(build)
        if size > MAX_SHIPPED_BYTES:
            raise OutputError(f"the shipped model would take {size / 2**20:.1f} MiB, over the "
                              f"{MAX_SHIPPED_BYTES / 2**20:.0f} MiB the repository may carry; ship a smaller model")
    verify_checksums(out_dir)
    return out_dir


@contextmanager
def _diffusers_warnings_off():
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
