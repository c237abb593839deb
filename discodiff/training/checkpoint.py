"""Atomic training checkpoints: ``RUN/checkpoints/checkpoint-<step>``, newest ``keep_last`` kept, ``latest`` resolved.

A checkpoint is written by ``accelerator.save_state`` into ``checkpoint-<step>.tmp`` and renamed to
``checkpoint-<step>`` only when every process has finished writing, so a crash while writing leaves
the previous checkpoints untouched; leftover ``.tmp`` directories are never resumed from and are removed
by :func:`remove_incomplete`.

Every checkpoint records the id of the run that wrote it (``run_id``, inherited on resume). Keeping the
newest ``keep_last`` only ever deletes checkpoints of the current run at or before the current step, so
checkpoints of another run, or newer ones, are never deleted by pruning.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from discodiff.errors import TrainingError

from .state import STATE_FILE

CHECKPOINTS_DIR = "checkpoints"
INCOMPLETE_SUFFIX = ".tmp"
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
RUN_ID_FILE = "run_id"


def checkpoint_path(checkpoints_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(checkpoints_dir) / f"checkpoint-{step}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-<step>`` directory name, None for anything else (including ``.tmp``)."""
    match = CHECKPOINT_PATTERN.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_run_id(path: str | Path) -> str | None:
    """The id of the run that wrote the checkpoint ``path``; None for checkpoints written before run ids."""
    file = Path(path) / RUN_ID_FILE
    return (file.read_text().strip() or None) if file.is_file() else None


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``checkpoints_dir``, oldest first."""
    directory = Path(checkpoints_dir)
    found = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if directory.is_dir() else []
    return sorted(found, key=checkpoint_step)


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: str | Path, step: int, keep_last: int, run_id: str) -> Path:
    """``accelerator.save_state`` to ``checkpoint-<step>`` atomically, marked with ``run_id``; then
    :func:`prune_checkpoints` keeps this run's newest ``keep_last``.

    Call on every process (each writes its own RNG state, and its shard under FSDP).
    """
    final = checkpoint_path(checkpoints_dir, step)
    partial = final.with_name(final.name + INCOMPLETE_SUFFIX)
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / RUN_ID_FILE).write_text(run_id + "\n")
        if final.exists():  # this step is being redone (the run resumed from an older checkpoint with --overwrite)
            shutil.rmtree(final)
        os.replace(partial, final)
        prune_checkpoints(checkpoints_dir, run_id, step, keep_last)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(checkpoints_dir: str | Path, run_id: str, step: int, keep_last: int) -> list[Path]:
    """Delete this run's checkpoints (``run_id``, step ≤ ``step``) but the newest ``keep_last``; return the deleted ones.

    Checkpoints of other runs, without a run id, or after ``step`` are never candidates.
    """
    own = [p for p in list_checkpoints(checkpoints_dir) if checkpoint_step(p) <= step and checkpoint_run_id(p) == run_id]
    deleted = own[:-keep_last] if keep_last > 0 else own
    for old in deleted:
        shutil.rmtree(old)
    return deleted


def remove_incomplete(checkpoints_dir: str | Path) -> list[Path]:
    """Delete ``*.tmp`` checkpoints left by a crash while writing; return what was removed."""
    directory = Path(checkpoints_dir)
    leftovers = [p for p in directory.glob(f"*{INCOMPLETE_SUFFIX}") if p.is_dir()] if directory.is_dir() else []
    for path in leftovers:
        shutil.rmtree(path)
    return leftovers


def resolve_checkpoint(resume: str | Path, checkpoints_dir: str | Path) -> Path | None:
    """``latest`` → the newest complete checkpoint in ``checkpoints_dir`` (None when there is none yet);
    a path → that checkpoint, which must be a complete ``checkpoint-<step>`` directory (a :class:`TrainingError` if not)."""
    if str(resume) == "latest":
        found = list_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    path = Path(resume)
    if checkpoint_step(path) is None or not path.is_dir():
        names = [p.name for p in list_checkpoints(checkpoints_dir)]
        choices = f"one of {names} in {checkpoints_dir}" if names else f"a checkpoint directory (there are none in {checkpoints_dir} yet)"
        raise TrainingError(f"--resume {resume}: not a complete checkpoint directory (checkpoint-<step>); "
                            f"use --resume latest or {choices}")
    return path


def require_complete(checkpoint: str | Path, flag: str = "--resume") -> Path:
    """``checkpoint`` if it holds the trainer's state (:data:`STATE_FILE`), else a :class:`TrainingError`."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / STATE_FILE).is_file():
        raise TrainingError(f"{flag} {checkpoint}: not a complete training checkpoint (no {STATE_FILE}); "
                            "choose another checkpoint of the run")
    return checkpoint
