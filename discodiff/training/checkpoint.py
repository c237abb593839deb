"""Atomic training checkpoints: ``RUN/checkpoints/checkpoint-<step>``, newest ``keep_last`` kept, ``latest`` resolved.

A checkpoint is written by ``accelerator.save_state`` into ``checkpoint-<step>.tmp`` and renamed to
``checkpoint-<step>`` only when every process has finished writing, so a crash while writing leaves
the previous checkpoints untouched; leftover ``.tmp`` directories are never resumed from and are removed
by :func:`remove_incomplete`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

CHECKPOINTS_DIR = "checkpoints"
INCOMPLETE_SUFFIX = ".tmp"
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")


def checkpoint_path(checkpoints_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(checkpoints_dir) / f"checkpoint-{step}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-<step>`` directory name, None for anything else (including ``.tmp``)."""
    match = CHECKPOINT_PATTERN.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``checkpoints_dir``, oldest first."""
    directory = Path(checkpoints_dir)
    found = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if directory.is_dir() else []
    return sorted(found, key=checkpoint_step)


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: str | Path, step: int, keep_last: int) -> Path:
    """``accelerator.save_state`` to ``checkpoint-<step>`` atomically; then delete all but the newest ``keep_last``.

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
        if final.exists():  # resumed from an older checkpoint: this step is being redone
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_incomplete(checkpoints_dir: str | Path) -> list[Path]:
    """Delete ``*.tmp`` checkpoints left by a crash while writing; return what was removed."""
    directory = Path(checkpoints_dir)
    leftovers = [p for p in directory.glob(f"*{INCOMPLETE_SUFFIX}") if p.is_dir()] if directory.is_dir() else []
    for path in leftovers:
        shutil.rmtree(path)
    return leftovers


def resolve_checkpoint(resume: str | Path, checkpoints_dir: str | Path) -> Path | None:
    """``latest`` → the newest complete checkpoint in ``checkpoints_dir`` (None when there is none yet);
    a path → that checkpoint, which must be complete."""
    if str(resume) == "latest":
        found = list_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    path = Path(resume)
    if checkpoint_step(path) is None or not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint directory (checkpoint-<step>); "
                                f"use --resume latest or one of {[p.name for p in list_checkpoints(checkpoints_dir)]}")
    return path
