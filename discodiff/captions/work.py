"""The caption work folder: where every step of a caption run keeps its per-clip results, so an interrupted run resumes.

Layout::

    WORK/clips.jsonl                      the clip list, fixed when the folder is made (clips.Clip rows)
    WORK/<step>/settings.json             what the step's results depend on (models, templates, seeds, batching, the
                                          upstream steps' settings keys)
    WORK/<step>/records/<quoted id>.json  one result per clip, each written atomically

Nothing half-written is kept (a record is renamed into place whole), nothing is computed twice (a clip with a record
is skipped), and a step whose settings changed is refused unless told to start that step again (``overwrite``).
Work is batched over **fixed batches of the clip list** (batch ``b`` holds clips ``b·B … b·B+B−1`` and is drawn with
seed ``seed + b·B``, so clip ``i`` always gets the seed offset ``i``): a resumed or sharded run forms the same
batches and so gives byte-identical results, whatever was interrupted. Under ``accelerate launch`` process ``r`` of
``N`` takes batches ``r, r+N, …``; the records are the merge.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError, ExistingWorkError
from ..evaluation.protocol import distributed_state, read_json, settings_key, write_json
from .clips import Clip, read_clips, write_clips

CLIPS_FILE = "clips.jsonl"
SETTINGS_FILE = "settings.json"
RECORDS_DIR = "records"


def record_stem(clip_id: str) -> str:
    """A file stem for ``clip_id`` (percent-encoded, so ids with ``/`` or spaces stay one flat, reversible name)."""
    return urllib.parse.quote(clip_id, safe="")


def record_name(clip_id: str) -> str:
    """The record file name of ``clip_id``."""
    return record_stem(clip_id) + ".json"


@dataclass
class StepRecords:
    """One step's folder: its settings and a record per clip."""

    folder: Path
    settings: dict

    @property
    def key(self) -> str:
        """The step's settings key (recorded by the steps that read its results)."""
        return settings_key(self.settings)

    def path(self, clip_id: str) -> Path:
        return self.folder / RECORDS_DIR / record_name(clip_id)

    def get(self, clip_id: str) -> dict | None:
        """The clip's record, or None when there is none (or a damaged one a killed process left: redone)."""
        record = read_json(self.path(clip_id))
        return record if record is not None and record.get("id") == clip_id else None

    def put(self, clip_id: str, record: dict) -> None:
        write_json(self.path(clip_id), {"id": clip_id, **record})

    def require(self, clips: Sequence[Clip], what: str) -> list[dict]:
        """Every clip's record, or a :class:`DataError` naming the step to run first."""
        records = [self.get(clip.id) for clip in clips]
        missing = [clip.id for clip, record in zip(clips, records) if record is None]
        if missing:
            raise DataError(f"{self.folder.name} has no result for {len(missing)} of {len(clips)} clips (first: "
                            f"{missing[0]!r}); run `discodiff captions {self.folder.name}` on this work folder first "
                            f"({what} needs it)")
        return records


class CaptionWork:
    """A work folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.clips = read_clips(self.root / CLIPS_FILE)

    @classmethod
    def create(cls, root: str | Path, clips: Sequence[Clip]) -> "CaptionWork":
        """A new work folder for ``clips``, or the existing one when it was made for exactly these clips; a folder
        made for other clips (or holding something else) is refused. Under a launcher the main process decides."""
        with main_process_first():
            if is_main_process():
                cls._claim(Path(root), clips)
        return cls(root)

    @staticmethod
    def _claim(root: Path, clips: Sequence[Clip]) -> None:
        path = root / CLIPS_FILE
        if path.is_file():
            existing = read_clips(path)
            if [c.to_dict() for c in existing] != [c.to_dict() for c in clips]:
                raise ExistingWorkError(f"{root} is a caption work folder for other clips ({len(existing)} clips, first "
                                        f"{existing[0].id!r}); choose a new --work folder")
        elif root.is_dir() and any(root.iterdir()):
            raise ExistingWorkError(f"{root} is a non-empty folder that is not a caption work folder (no {CLIPS_FILE}); "
                                    "choose a new or empty folder")
        else:
            write_clips(path, clips)

    @classmethod
    def open(cls, root: str | Path) -> "CaptionWork":
        """An existing work folder (made by the first step of a run)."""
        if not (Path(root) / CLIPS_FILE).is_file():
            raise DataError(f"{root} is not a caption work folder (no {CLIPS_FILE}); start with `discodiff captions "
                            "describe` or `discodiff captions tags` on a clip folder")
        return cls(root)

    def existing_step(self, name: str) -> StepRecords | None:
        """The step's records when it has been run here (its settings file exists), else None."""
        settings = read_json(self.root / name / SETTINGS_FILE)
        return None if settings is None else StepRecords(self.root / name, settings)

    def step(self, name: str, settings: dict, overwrite: bool = False) -> StepRecords:
        """The step's records for ``settings``: resumed when they match the folder's, started again when they differ
        and ``overwrite`` (its earlier records are deleted), else refused naming what changed."""
        folder = self.root / name
        with main_process_first():
            if is_main_process():
                self._claim_step(folder, name, settings, overwrite)
        return StepRecords(folder, settings)

    @staticmethod
    def _claim_step(folder: Path, name: str, settings: dict, overwrite: bool) -> None:
        earlier = read_json(folder / SETTINGS_FILE)
        if earlier is not None and earlier != settings:
            if not overwrite:
                changed = sorted(key for key in set(earlier) | set(settings) if earlier.get(key) != settings.get(key))
                raise ExistingWorkError(f"{folder} holds results made with other settings (changed: "
                                        f"{', '.join(changed)}); pass --overwrite to redo the {name} step, or use "
                                        "another --work folder")
            shutil.rmtree(folder / RECORDS_DIR, ignore_errors=True)
        if earlier != settings:
            write_json(folder / SETTINGS_FILE, settings)


def is_main_process() -> bool:
    state = distributed_state()
    return state is None or state.is_main_process


@contextmanager
def main_process_first():
    """Under a launcher: the other processes wait until the main one has left the block (where it writes)."""
    state = distributed_state()
    if state is None:
        yield
        return
    with state.main_process_first():
        yield


def run_batches(records: StepRecords, clips: Sequence[Clip], batch_size: int,
                compute: Callable[[list[Clip], int], list[dict]], desc: str, progress: bool = True) -> int:
    """Compute ``compute(batch, first_index) -> one record per clip`` for every fixed batch with a missing record
    (this process's share under a launcher) and store the records; returns how many batches were computed."""
    state = distributed_state()
    process, processes = (state.process_index, state.num_processes) if state is not None else (0, 1)
    starts = list(range(0, len(clips), batch_size))[process::processes]
    pending = [start for start in starts if any(records.get(clip.id) is None for clip in clips[start:start + batch_size])]
    with tqdm(total=len(pending), desc=desc, unit="batch", disable=not progress) as bar:
        for start in pending:
            batch = list(clips[start:start + batch_size])
            results = compute(batch, start)
            if len(results) != len(batch):
                raise RuntimeError(f"{desc}: {len(results)} results for a batch of {len(batch)} clips")
            for clip, result in zip(batch, results):
                records.put(clip.id, result)
            bar.update(1)
    if state is not None:
        state.wait_for_everyone()
    return len(pending)
