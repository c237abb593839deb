"""The data of a training run: train and validation datasets and their collate function, built from the generic
``data`` section for the task the run trains; plus the checks of latent caches that the diffusion task uses.

**Batch contract.** A batch (what ``collate(items)`` returns, torch's ``default_collate`` when ``data.collate`` is
null) is a ``dict`` of per-item values: tensors with the batch first (``[B, …]``) and lists of strings (``B``
items). A task declares the keys it reads (:attr:`~.task.TrainingTask.batch_keys`) and ignores the others, so a
dataset may carry more columns (codes, other per-frame features) for other tasks. The diffusion stage task reads::

    {"latents":       float32 [B, K·d, L]  raw (un-normalised) accompaniment latents,
     "vocal_latents": float32 [B, K·d, L]  raw vocal latents, frame-aligned with "latents",
     "frame_mask":    bool    [B, L]       True = real frame,
     "captions":      list[str] (B)}

plus, optionally, the frozen text encoder's outputs cached by the data preparation (``text_sequence
[B, S, D]``, ``text_mask [B, S]``, ``text_pooled [B, P]``; they replace running the text encoder); the default
dataset also yields ``track_ids`` (list[str]) and may yield ``codes``. For exact resumption a dataset draws its
item randomness from (seed, epoch, index) only, with an optional ``set_epoch(epoch)``. A prepared latent data
dir holds ``latent_stats.json`` (:class:`~discodiff.latents.LatentStats`) and ``codec.json``
(:class:`~discodiff.data.cache.CodecInfo`).

:func:`check_data` makes the generic checks before a model is built (the data dirs are set and exist, the
dataset and collate paths import); :func:`check_latent_data` adds, for the default
:class:`~discodiff.data.dataset.LatentCropDataset` (and its subclasses), that they are finished latent caches
whose windows are at least ``data.crop_frames`` long.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from discodiff.codec import DacCodec
from discodiff.data.cache import CODEC_FILE, DATASET_DIR, LATENT_STATS_FILE, CacheLayout, CodecInfo
from discodiff.errors import ConfigError, DataError, DiscoDiffError
from discodiff.latents import LatentStats

from .config import DataSection

DEFAULT_DATASET = "discodiff.data.dataset:LatentCropDataset"
PREPARE_HINT = "make one with `discodiff prepare STEMS_DIR --out {directory}` (a rerun resumes)"
LATENT_CACHE_HINT = "a latent cache made with `discodiff prepare STEMS_DIR --out path/to/cache`"


def build_dataset(dataset_class: type, data: DataSection, key: str, directory: str, **arguments) -> Dataset:
    """``dataset_class(directory, **arguments, **data.options)``; a dataset refusing the options becomes a
    :class:`~discodiff.errors.ConfigError` naming ``key``, the directory and ``data.options``."""
    try:
        return dataset_class(directory, **arguments, **data.options)
    except DiscoDiffError:
        raise
    except (TypeError, ValueError) as err:
        if isinstance(err, TypeError) and "argument" not in str(err):
            raise
        raise ConfigError(f"data.dataset {data.dataset} cannot be built on {key}={directory} with "
                          f"data.options={data.options} ({err}); fix data.options") from err


@dataclass
class TrainingData:
    """``train`` / ``validation`` datasets of the batch contract and their ``collate_fn`` (None: torch's default)."""

    train: Dataset
    validation: Dataset
    collate_fn: Callable | None = None

    @classmethod
    def from_config(cls, data: DataSection, num_validation_items: int, frame_multiple: int, seed: int) -> TrainingData:
        """Build the datasets named in ``data``; without ``data.validation_dir``, hold out the first items of
        ``data.data_dir``. ``frame_multiple``: the task's :attr:`~.task.TrainingTask.length_multiple`."""
        dataset_class = import_object(data.dataset, "data.dataset")
        collate_fn = import_object(data.collate, "data.collate") if data.collate else None

        def build(key: str, directory: str) -> Dataset:
            return build_dataset(dataset_class, data, key, directory, crop_frames=data.crop_frames,
                                 frame_multiple=frame_multiple, seed=seed)

        if data.validation_dir:
            train, validation = build("data.data_dir", data.data_dir), build("data.validation_dir", data.validation_dir)
            validation = Subset(validation, range(min(num_validation_items, len(validation))))
        else:
            train, validation = hold_out(build("data.data_dir", data.data_dir), build("data.data_dir", data.data_dir),
                                         num_validation_items)
        return cls(train, validation, collate_fn)


def data_directories(data: DataSection) -> list[tuple[str, str]]:
    """``(config key, directory)`` of every data dir ``data`` names (``data.data_dir``, ``data.validation_dir``)."""
    return [(key, directory) for key, directory in (("data.data_dir", data.data_dir), ("data.validation_dir", data.validation_dir))
            if directory]


def check_batch_keys(batch: dict, keys: tuple[str, ...], task: str) -> None:
    """A :class:`DataError` naming the keys of ``keys`` (a task's :attr:`~.task.TrainingTask.batch_keys`) that ``batch`` lacks."""
    missing = [key for key in keys if key not in batch]
    if missing:
        raise DataError(f"the batch lacks {missing}; {task} needs datasets that yield {keys} (see discodiff.training.data)")


class EpochSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that passes ``set_epoch`` on to its dataset."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def hold_out(train_copy: Dataset, validation_copy: Dataset, num_items: int) -> tuple[EpochSubset, Subset]:
    """Items ``num_items…`` of ``train_copy`` for training, items ``0…num_items−1`` of ``validation_copy`` for validation.

    Two copies of one dataset, so that the training epoch never changes the validation crops.
    """
    if len(train_copy) <= num_items:
        raise DataError(f"the dataset has {len(train_copy)} items, too few to hold out validation.num_items={num_items}; "
                         "lower validation.num_items or pass data.validation_dir")
    return EpochSubset(train_copy, range(num_items, len(train_copy))), Subset(validation_copy, range(num_items))


def latent_stats_path(data_dir: str | Path) -> Path:
    """Where a prepared data dir keeps its ``latent_stats.json`` (inside ``dataset/`` for a latent cache)."""
    return CacheLayout(Path(data_dir)).latent_stats_file if (Path(data_dir) / DATASET_DIR).is_dir() else Path(data_dir) / LATENT_STATS_FILE


def load_latent_stats(data_dir: str | Path) -> LatentStats:
    """The ``latent_stats.json`` of a prepared data dir."""
    path = latent_stats_path(data_dir)
    if not path.is_file():
        raise DataError(f"{path} not found: data.data_dir={data_dir} is not a prepared data directory; make one with "
                        f"`discodiff prepare STEMS_DIR --out {data_dir}`")
    return LatentStats.load(path)


def import_object(path: str, key: str):
    """The object at ``module:attribute`` (config key ``key`` names it in errors)."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        raise ConfigError(f"{key} must be 'module:attribute', e.g. {DEFAULT_DATASET}; got '{path}'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key} '{path}' cannot be imported ({err}); fix the path or put its module on PYTHONPATH") from err


def check_data(data: DataSection, hint: str = LATENT_CACHE_HINT) -> None:
    """Raise a one-line :class:`DataError` / :class:`ConfigError` for data that cannot train: ``data.data_dir`` unset
    or missing, ``data.validation_dir`` missing, a dataset or collate path that does not import. ``hint`` says what
    the data dir should be (the task's :attr:`~.task.TrainingTask.data_hint`). Reads no data."""
    if not data.data_dir:
        raise DataError(f"data.data_dir is not set; pass data.data_dir=path/to/data, {hint}")
    import_object(data.dataset, "data.dataset")
    if data.collate:
        import_object(data.collate, "data.collate")
    for key, directory in data_directories(data):
        path = Path(directory)
        if not path.is_dir():
            what = "file, not a folder" if path.exists() else "such directory"
            raise DataError(f"{key}={directory}: no {what}; pass {key}= {hint}")


def check_latent_data(data: DataSection, frame_multiple: int | None = None) -> LatentStats:
    """The latent-cache checks of the diffusion task, after :func:`check_data`: ``data.crop_frames`` not shorter than
    ``frame_multiple`` (the U-Net's downsampling factor); for :class:`~discodiff.data.dataset.LatentCropDataset` (and
    subclasses) finished latent caches whose windows hold ``data.crop_frames``. Returns the latent statistics of
    ``data.data_dir``. Reads only small metadata files, so it runs before any model is built."""
    cache = reads_cache(import_object(data.dataset, "data.dataset"))
    if frame_multiple is not None and data.crop_frames < frame_multiple:
        raise ConfigError(f"data.crop_frames={data.crop_frames} is shorter than the U-Net's downsampling factor "
                          f"({frame_multiple} frames); set data.crop_frames to at least {frame_multiple}")
    if cache:
        for key, directory in data_directories(data):
            check_cache(key, Path(directory), data.crop_frames, frame_multiple)
    return load_latent_stats(data.data_dir)


def reads_cache(dataset_class) -> bool:
    """Whether ``dataset_class`` reads a latent cache of :mod:`discodiff.data.cache` (LatentCropDataset and subclasses)."""
    from discodiff.data.dataset import LatentCropDataset

    return isinstance(dataset_class, type) and issubclass(dataset_class, LatentCropDataset)


def check_cache(key: str, directory: Path, crop_frames: int, frame_multiple: int | None = None) -> int:
    """``directory`` is a finished latent cache whose windows hold ``crop_frames``; returns the window length in frames."""
    try:
        CacheLayout(directory).require_dataset()
    except (OSError, DiscoDiffError) as err:
        raise DataError(f"{key}={directory}: {err}") from err
    frames = window_frames(key, directory)
    if crop_frames > frames:
        seconds = ""
        if (directory / CODEC_FILE).is_file():
            seconds = f", {frames / CodecInfo.load(directory / CODEC_FILE).frame_rate:.2f} s"
        if frame_multiple is not None and frames < frame_multiple:
            raise ConfigError(f"the windows of {key}={directory} ({frames} frames{seconds}) are shorter than the U-Net's "
                              f"downsampling factor ({frame_multiple}); re-prepare with a longer --window-seconds")
        raise ConfigError(f"data.crop_frames={crop_frames} is longer than the windows of {key}={directory} "
                          f"({frames} frames{seconds}); set data.crop_frames to at most {frames}, or re-prepare "
                          "with a longer --window-seconds")
    return frames


def window_frames(key: str, directory: Path) -> int:
    """Frames per window of the cache at ``directory`` (the ``latents`` feature's last axis), from its metadata."""
    info = CacheLayout(directory).dataset_dir / "dataset_info.json"
    try:
        return int(json.loads(info.read_text())["features"]["latents"]["shape"][-1])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise DataError(f"{key}={directory}: {info} is unreadable or lacks the latents' shape ({err}); the cache is "
                        f"damaged: {PREPARE_HINT.format(directory=directory)}") from err


def check_codec(key: str, directory: str | Path, codec: DacCodec, codec_id: str | None = None) -> None:
    """Refuse a data dir whose ``codec.json`` names another codec than ``codec`` (the model's, named ``codec_id``):
    another geometry, or the same geometry with other weights (:meth:`CodecInfo.check_compatible`; latents of another
    codec are not this model's, whatever their shape)."""
    path = Path(directory) / CODEC_FILE
    if not path.is_file():
        return
    info = CodecInfo.load(path)
    try:
        info.check_compatible(codec, codec_id)
    except DataError as err:
        raise DataError(f"{key}={directory}: {err} (in a training config: model.overrides=[codec.id={info.id}])") from err
