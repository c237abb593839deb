"""The model shipped inside the package and the record that proves its files are the ones released.

``discodiff/pretrained/bach-chorales/`` is an ordinary diffusion-family model directory (``pipeline.json``, the
two U-Nets, their vocal encoders, the scheduler, the latent statistics) whose codec and text encoder are bundled
(``codec/``, ``text_encoder/``), every weight stored as fp16 safetensors (loaders upcast to float32), with its
model card (``README.md``) and ``checksums.json``: the sha256 and size of every other file. ``discodiff sample``
without ``--model`` loads it after :func:`verify_checksums`; ``train/ship.py`` (:func:`.ship.ship_model`) writes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ModelDirectoryError

SHIPPED_MODEL_NAME = "bach-chorales"
SHIPPED_AR_MODEL_NAME = "ar-bach-chorales"  # the AR baseline trained on the same data (the evaluation compares them)
CHECKSUM_FILE = "checksums.json"
MAX_SHIPPED_BYTES = 50 * 2**20  # what the repository may carry


def shipped_model_dir(name: str = SHIPPED_MODEL_NAME) -> Path:
    """Where the shipped model ``name`` lives (inside the installed package); by default the one ``discodiff
    sample`` uses without ``--model``."""
    return Path(__file__).resolve().parent / name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_records(directory: str | Path) -> dict[str, dict]:
    """``{relative path: {"sha256": …, "bytes": …}}`` of every file under ``directory`` but the checksum file."""
    directory = Path(directory)
    return {path.relative_to(directory).as_posix(): {"sha256": sha256_of(path), "bytes": path.stat().st_size}
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != CHECKSUM_FILE}


def directory_bytes(directory: str | Path) -> int:
    """The total size of the files under ``directory``."""
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def write_checksums(directory: str | Path) -> Path:
    """Record :func:`file_records` of ``directory`` in its ``checksums.json``."""
    path = Path(directory) / CHECKSUM_FILE
    path.write_text(json.dumps(file_records(directory), indent=1) + "\n")
    return path


def verify_checksums(directory: str | Path) -> None:
    """Raise :class:`ModelDirectoryError` naming every missing, changed or unrecorded file of ``directory``."""
    directory = Path(directory)
    record_path = directory / CHECKSUM_FILE
    if not record_path.is_file():
        raise ModelDirectoryError(f"{record_path}: missing, so the shipped files cannot be verified; restore the "
                                  "model folder from the repository (git checkout -- discodiff/pretrained)")
    try:
        recorded = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirectoryError(f"{record_path}: not valid JSON ({err}); restore it from the repository") from err
    actual = file_records(directory)
    problems = [f"{name} missing" for name in recorded if name not in actual]
    problems += [f"{name} changed (sha256 {actual[name]['sha256'][:12]}…, recorded {recorded[name]['sha256'][:12]}…)"
                 for name in recorded if name in actual and actual[name]["sha256"] != recorded[name]["sha256"]]
    problems += [f"{name} not recorded" for name in actual if name not in recorded]
    if problems:
        raise ModelDirectoryError(f"{directory}: its files are not the released ones: {'; '.join(problems)}; restore "
                                  "them from the repository (git checkout -- discodiff/pretrained; with Git LFS, "
                                  "git lfs pull) or pass your own model with --model")
