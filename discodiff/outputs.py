"""Output locations: checked before any work starts, written atomically.

Every command that writes calls :func:`check_output_file` or :func:`check_output_dir` before it loads a
model or reads its input, so an unusable location fails in one line instead of after the compute. Files
and directories are then written through :func:`atomic_file` / :func:`atomic_directory`: the result is
built under a temporary name in the same folder and renamed into place, so a crash, a kill or a full disk
never leaves a partial output or destroys the previous one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import ExistingWorkError, OutputError

AUDIO_OUTPUT_SUFFIXES = (".wav", ".flac", ".ogg")
TEMPORARY_MARK = ".tmp-"
HEADROOM_BYTES = 1 << 20


def check_output_file(path: str | Path, suffixes: Sequence[str], *, what: str = "output", expected_bytes: int = 0,
                      inputs: Sequence[str | Path] = ()) -> Path:
    """``path`` as a file output that can be written: right suffix, not a folder, not one of ``inputs``, in a
    writable folder (missing folders are created at write time) with room for ``expected_bytes``."""
    path = Path(path)
    allowed = ", ".join(suffixes)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name ending in {allowed}")
    if path.suffix.lower() not in suffixes:
        got = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise OutputError(f"{what} {path} has {got}; give a file name ending in {allowed} (e.g. {path.with_suffix(suffixes[0]).name})")
    for source in inputs:
        if Path(source).exists() and path.exists() and os.path.samefile(source, path):
            raise OutputError(f"{what} {path} is also an input; writing it would destroy the input: choose another name")
    _check_writable_folder(path, what, expected_bytes)
    return path


def check_output_dir(path: str | Path, *, what: str, marker: str, reuse: bool = False, overwrite: bool = False,
                     flag: str = "--overwrite", expected_bytes: int = 0) -> bool:
    """Check ``path`` as a folder output before any work; returns whether it already holds work of this kind.

    ``marker`` is the file or folder that identifies that work (``pipeline.json`` for a model). A folder with
    the marker is accepted when ``reuse`` (the caller resumes it) or ``overwrite`` (the user said ``flag``),
    else refused; a non-empty folder without it is always refused, so unrelated files are never touched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; choose a new folder name")
    holds_work = (path / marker).exists()
    if holds_work and not (reuse or overwrite):
        raise ExistingWorkError(f"{what} {path} already holds earlier work ({marker}); pass {flag} to replace it, "
                                "or choose a new folder")
    if path.is_dir() and not holds_work and any(path.iterdir()):
        raise ExistingWorkError(f"{what} {path} is a non-empty folder that does not hold this kind of output (no {marker}); "
                                "choose a new or empty folder")
    _check_writable_folder(path / marker, what, expected_bytes)
    return holds_work


def _check_writable_folder(path: Path, what: str, expected_bytes: int) -> None:
    """The nearest existing folder above ``path`` accepts a new file and has room for ``expected_bytes``."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder; choose another location")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".discodiff-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({err.strerror or err}); choose a writable location") from err
    free = shutil.disk_usage(folder).free
    if free < expected_bytes + HEADROOM_BYTES:
        raise OutputError(f"{what} {path}: {folder} has {_size(free)} free, {_size(expected_bytes + HEADROOM_BYTES)} "
                          "needed; free some space or choose another location")


def _size(num_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` for this process, keeping the suffix (libraries choose formats by it)."""
    return path.with_name(f".{path.stem}{TEMPORARY_MARK}{os.getpid()}{path.suffix}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` (new or earlier) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_array_record(path: str | Path, arrays: dict, metadata_text: str) -> Path:
    """Write ``arrays`` (name → numpy array) and ``metadata_text`` (JSON) as one ``.npz`` file, atomically: the
    storage of fitted statistics (evaluation's ``GaussianStats``, captions' ``GaussianReference``)."""
    import numpy as np

    with atomic_file(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays, metadata=np.array(metadata_text))
    return Path(path)


def load_array_record(path: str | Path) -> tuple[dict, dict | None]:
    """``(arrays, metadata)`` of a file :func:`save_array_record` wrote: every array but the metadata (name → numpy
    array) and the parsed JSON metadata (None when the file has none). Raises what ``numpy.load`` and ``json`` raise
    on a damaged file (``OSError``, ``ValueError``, ``EOFError``, ``zipfile.BadZipFile``); callers name the fix."""
    import json

    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else None
        arrays = {name: data[name] for name in data.files if name != "metadata"}
    return arrays, metadata if isinstance(metadata, dict) else None


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder to build ``path`` in; on success it takes ``path``'s place.

    An earlier ``path`` is moved aside, the new folder renamed in, then the old one deleted, so at every
    moment either the old or the new complete folder exists under its name or its backup name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        backup = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, backup)
        os.replace(temporary, path)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` from writing or reading: the file, the reason and the fix."""
    where = err.filename or "a file"
    hints = {errno.ENOSPC: "free some space or choose another location",
             errno.EACCES: "choose a location you can write to", errno.EPERM: "choose a location you can write to",
             errno.EROFS: "the file system is read-only: choose another location",
             errno.ENOENT: "check the path", errno.EISDIR: "give a file name, not a folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder"}
    hint = hints.get(err.errno, "check the path and permissions")
    return f"{where}: {err.strerror or err}; {hint}"
