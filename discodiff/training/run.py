"""The run directory: what a training run may continue, replace or delete there, decided before anything is written.

:func:`plan_run` reads ``output_dir`` and the ``--resume`` / ``--overwrite`` choice and returns a
:class:`RunPlan`, or raises a one-line error, without writing anything:

- without ``--resume``, ``output_dir`` must be new or empty. One that holds a run (``train_config.yaml`` or
  ``checkpoints/``) is refused with an :class:`~discodiff.errors.ExistingWorkError` naming ``--resume latest``
  (continue it) and ``--overwrite`` (start over: only then are the earlier run's checkpoints, metrics,
  samples and logs deleted, when training starts). A non-empty folder that holds no run is always refused.
- with ``--resume latest`` the newest complete checkpoint is continued (a fresh start when there is none);
  with ``--resume RUN/checkpoints/checkpoint-N`` that checkpoint, which must belong to ``output_dir``. Newer
  checkpoints of the run would be replaced as the run retrains their steps, so they are refused by name
  unless ``--overwrite`` allows deleting them.
- a resumed run must use the saved ``train_config.yaml`` but for :meth:`~.config.TrainConfig.resumable_keys` (how
  long it runs and what it logs, validates, samples and keeps); other differences are refused by key. Paths may
  differ where they name the same thing: a ``model.config`` holding the same YAML, a ``model.init_from`` holding the
  same files as the run recorded in ``init_from.json`` when it started (the run moved to another machine or checkout).
  A new ``max_steps`` is allowed but moves the end of the learning rate's cosine decay; the run says so when it starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import json

import yaml

from discodiff.errors import ExistingWorkError, TrainingError
from discodiff.outputs import atomic_file, check_output_dir
from discodiff.pretrained import file_records

from .checkpoint import CHECKPOINTS_DIR, checkpoint_step, list_checkpoints, require_complete, resolve_checkpoint
from .config import TrainConfig

CONFIG_FILE = "train_config.yaml"
MODEL_CONFIG_COPY = "model_config.yaml"  # the model config the run started from, so it moves with the run
INIT_FROM_RECORD = "init_from.json"  # the sha256 and size of every file of model.init_from, so a copy elsewhere is known
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
LOGS_DIR = "logs"
RUN_MARKERS = (CONFIG_FILE, CHECKPOINTS_DIR)  # what makes a folder a run directory
RUN_ENTRIES = (CONFIG_FILE, MODEL_CONFIG_COPY, INIT_FROM_RECORD, METRICS_FILE, CHECKPOINTS_DIR, SAMPLES_DIR, LOGS_DIR)  # what the loop writes (+ the task's run_files)


@dataclass
class RunPlan:
    """``run_dir``; ``resume``: continue the run there (or start it, when it has no checkpoint yet); ``start``: the
    checkpoint to load (None: step 0); ``remove``: earlier work that ``--overwrite`` allowed to delete, removed
    when training starts; ``notes``: what a resumed run's changed keys change beyond themselves, printed at the start."""

    run_dir: Path
    resume: bool = False
    start: Path | None = None
    remove: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def start_step(self) -> int:
        return checkpoint_step(self.start) if self.start is not None else 0

    def remove_earlier_work(self) -> list[Path]:
        """Delete :attr:`remove` (call on the main process only); return what was deleted."""
        removed = []
        for path in self.remove:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
        return removed


def plan_run(config: TrainConfig, resume: str | Path | None = None, overwrite: bool = False,
             expected_bytes: int = 0, run_files: Sequence[str] = ()) -> RunPlan:
    """Check ``config.output_dir`` for a run started (``resume`` None) or continued (``latest`` or a checkpoint
    directory) as asked, with room for ``expected_bytes``; see the module docstring. ``run_files``: what the task
    writes into the run directory besides :data:`RUN_ENTRIES` (removed with the earlier run). Writes nothing."""
    run_dir = Path(config.output_dir)
    checkpoints = run_dir / CHECKPOINTS_DIR
    present = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if resume is None and present and not overwrite:
        raise ExistingWorkError(f"output_dir {run_dir} already holds a training run ({describe_run(run_dir)}); pass "
                                "--resume latest to continue it, or --overwrite to start over (deletes its checkpoints, "
                                "metrics, samples and logs), or choose a new output_dir")
    check_output_dir(run_dir, what="output_dir", marker=present[0] if present else CONFIG_FILE, reuse=True,
                     expected_bytes=expected_bytes)
    if resume is None:
        entries = (*RUN_ENTRIES, *run_files)
        return RunPlan(run_dir, remove=[run_dir / name for name in entries if (run_dir / name).exists()])

    start = resolve_resume(resume, run_dir)
    remove = []
    if start is not None:
        step = checkpoint_step(start)
        newer = [p for p in list_checkpoints(checkpoints) if checkpoint_step(p) > step]
        if newer and not overwrite:
            raise ExistingWorkError(f"--resume {resume}: {checkpoints} holds newer checkpoints "
                                    f"({', '.join(p.name for p in newer)}) that continuing from step {step} would replace; "
                                    "pass --resume latest to continue from the newest, or --overwrite to delete them")
        samples = run_dir / SAMPLES_DIR
        newer_samples = [p for p in samples.glob("step-*") if p.name[5:].isdigit() and int(p.name[5:]) > step] \
            if samples.is_dir() else []
        remove = newer + sorted(newer_samples)
    notes = check_resumed_config(config, run_dir)
    return RunPlan(run_dir, resume=True, start=start, remove=remove, notes=notes)


def resolve_resume(resume: str | Path, run_dir: Path) -> Path | None:
    """The checkpoint that ``--resume resume`` names in ``run_dir`` (None: ``latest`` and no checkpoint yet)."""
    checkpoints = run_dir / CHECKPOINTS_DIR
    start = resolve_checkpoint(resume, checkpoints)
    if start is None:
        return None
    if str(resume) != "latest" and start.resolve().parent != checkpoints.resolve():
        owner = start.resolve().parent.parent
        raise TrainingError(f"--resume {resume} is not a checkpoint of output_dir {run_dir}; pass output_dir={owner} "
                            f"to continue that run, or one of {run_dir / CHECKPOINTS_DIR}/checkpoint-<step>")
    return require_complete(start, f"--resume {resume}:" if str(resume) == "latest" else "--resume")


def check_resumed_config(config: TrainConfig, run_dir: Path) -> list[str]:
    """Refuse ``config`` when it differs from the run's saved ``train_config.yaml`` in anything but its resumable keys;
    return notes on what the allowed changes change besides (a new ``max_steps`` reshapes the learning-rate decay)."""
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return []
    saved_config = saved_run_config(run_dir, config.model.init_from)
    differences = saved_config.differences(config)
    if _same_model_config(saved_config.model.config, config.model.config):  # another checkout, another absolute path
        differences = [d for d in differences if not d.startswith("model.config:")]
    if config.model.init_from and _same_init_from(run_dir, config.model.init_from):  # a copy of the same model
        differences = [d for d in differences if not d.startswith("model.init_from:")]
    if differences:
        allowed = ", ".join(config.resumable_keys())
        raise TrainingError(f"--resume: this config differs from the run's {saved} in {'; '.join(differences)}; "
                            f"a resumed run may change only {allowed}: resume with the saved values, or train into "
                            "a new output_dir")
    if saved_config.max_steps != config.max_steps:
        return [f"max_steps {saved_config.max_steps} → {config.max_steps}: the learning rate's cosine decay now ends at "
                f"step {config.max_steps} (from the resumed step on); to stop earlier without changing the schedule, "
                f"keep max_steps={saved_config.max_steps} and set max_minutes"]
    return []


def write_run_config(config: TrainConfig, run_dir: Path) -> None:
    """``train_config.yaml`` and, for a model built from its config, a copy of that model config (``model.config`` is
    stored as an absolute path, which another machine or checkout does not have)."""
    config.save(run_dir / CONFIG_FILE)
    if config.model.config:
        with atomic_file(run_dir / MODEL_CONFIG_COPY) as temporary:
            temporary.write_text(Path(config.model.config).read_text())
    if config.model.init_from:
        with atomic_file(run_dir / INIT_FROM_RECORD) as temporary:
            temporary.write_text(json.dumps(file_records(config.model.init_from), indent=1) + "\n")


def saved_run_config(run_dir: Path, init_from: str | None = None) -> TrainConfig:
    """The run's saved config; when its ``model.config`` path does not exist here (the run moved), the run's own copy
    of the model config stands in for it, and when its ``model.init_from`` does not, ``init_from`` does if it holds
    the files the run recorded."""
    path, copy = run_dir / CONFIG_FILE, run_dir / MODEL_CONFIG_COPY
    try:
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        model_config, saved_init = model.get("config"), model.get("init_from")
    except (yaml.YAMLError, AttributeError):
        model_config = saved_init = None  # from_yaml names the problem
    overrides = []
    if isinstance(model_config, str) and not Path(model_config).is_file() and copy.is_file():
        overrides.append(f"model.config={copy.resolve()}")
    if isinstance(saved_init, str) and not Path(saved_init).is_dir():
        if not (init_from and _same_init_from(run_dir, init_from)):
            given = f"; {init_from} holds other files" if init_from else ""
            raise TrainingError(f"{run_dir} started from model.init_from={saved_init}, which is not here{given}: pass "
                                f"model.init_from=<a copy of that model> (the files {run_dir / INIT_FROM_RECORD} records)")
        overrides.append(f"model.init_from={init_from}")
    return TrainConfig.from_yaml(path, overrides)


def _same_model_config(ours: str | None, theirs: str | None) -> bool:
    """Two ``model.config`` paths name the same model when their files hold the same YAML."""
    if ours == theirs:
        return True
    try:
        return yaml.safe_load(Path(ours).read_text()) == yaml.safe_load(Path(theirs).read_text())
    except (OSError, TypeError, yaml.YAMLError):
        return False


def _same_init_from(run_dir: Path, init_from: str) -> bool:
    """``init_from`` holds exactly the files (names, sizes, sha256) the run recorded of its ``model.init_from``."""
    record = run_dir / INIT_FROM_RECORD
    try:
        return Path(init_from).is_dir() and json.loads(record.read_text()) == file_records(init_from)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False


def describe_run(run_dir: Path) -> str:
    """``train_config.yaml, 2 checkpoints up to checkpoint-40`` for an error message."""
    parts = [CONFIG_FILE] if (run_dir / CONFIG_FILE).exists() else []
    found = list_checkpoints(run_dir / CHECKPOINTS_DIR)
    if found:
        parts.append(f"{len(found)} checkpoint{'s' if len(found) > 1 else ''} up to {found[-1].name}")
    elif (run_dir / CHECKPOINTS_DIR).exists():
        parts.append(f"{CHECKPOINTS_DIR}/")
    return ", ".join(parts)
