"""The data of a training run: train and validation datasets, their collate function, latent statistics.

Every dataset (with its collate function) yields batches of this contract::

    {"latents":       float32 [B, K·d, L]  raw (un-normalised) accompaniment latents,
     "vocal_latents": float32 [B, K·d, L]  raw vocal latents, frame-aligned with "latents",
     "frame_mask":    bool    [B, L]       True = real frame,
     "captions":      list[str] (B),
     "track_ids":     list[str] (B)}

plus, optionally, the frozen text encoder's outputs cached by the data preparation (``text_sequence
[B, S, D]``, ``text_mask [B, S]``, ``text_pooled [B, P]``; they replace running the text encoder). For exact
resumption a dataset draws its item randomness from (seed, epoch, index) only, with an optional
``set_epoch(epoch)``. The prepared data dir holds ``latent_stats.json``
(:class:`~discodiff.latents.LatentStats`) and ``codec.json`` (:class:`~discodiff.data.cache.CodecInfo`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from discodiff.codec import DacCodec
from discodiff.data.cache import CODEC_FILE, LATENT_STATS_FILE, CodecInfo
from discodiff.latents import LatentStats

from .config import DataSection


@dataclass
class TrainingData:
    """``train`` / ``validation`` datasets of the batch contract, their ``collate_fn`` (None: torch's default), ``latent_stats``."""

    train: Dataset
    validation: Dataset
    latent_stats: LatentStats
    collate_fn: Callable | None = None

    @classmethod
    def from_config(cls, data: DataSection, num_validation_items: int, frame_multiple: int, seed: int,
                    codec: DacCodec) -> TrainingData:
        """Build the datasets named in ``data``; without ``data.validation_dir``, hold out the first items of ``data.data_dir``.
        Data prepared with another codec geometry than ``codec`` (the model's) is refused."""
        if not data.data_dir:
            raise ValueError("data.data_dir is not set; pass data.data_dir=path/to/prepared_data")
        dataset_class = import_object(data.dataset, "data.dataset")
        collate_fn = import_object(data.collate, "data.collate") if data.collate else None

        def build(directory: str) -> Dataset:
            if not Path(directory).is_dir():
                raise FileNotFoundError(f"data directory {directory} not found; prepare one first (see train/README.md)")
            if (Path(directory) / CODEC_FILE).is_file():
                CodecInfo.load(Path(directory) / CODEC_FILE).check_compatible(codec)
            return dataset_class(directory, crop_frames=data.crop_frames, frame_multiple=frame_multiple, seed=seed,
                                 **data.options)

        if data.validation_dir:
            train, validation = build(data.data_dir), build(data.validation_dir)
            validation = Subset(validation, range(min(num_validation_items, len(validation))))
        else:
            train, validation = hold_out(build(data.data_dir), build(data.data_dir), num_validation_items)
        return cls(train, validation, load_latent_stats(data.data_dir), collate_fn)


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
        raise ValueError(f"the dataset has {len(train_copy)} items, too few to hold out validation.num_items={num_items}; "
                         "lower validation.num_items or pass data.validation_dir")
    return EpochSubset(train_copy, range(num_items, len(train_copy))), Subset(validation_copy, range(num_items))


def load_latent_stats(data_dir: str | Path) -> LatentStats:
    """The ``latent_stats.json`` of a prepared data dir."""
    path = Path(data_dir) / LATENT_STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a prepared data directory (see train/README.md)")
    return LatentStats.load(path)


def import_object(path: str, key: str):
    """The object at ``module:attribute`` (config key ``key`` names it in errors)."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        raise ValueError(f"{key} must be 'module:attribute', e.g. discodiff.data.dataset:LatentCropDataset; got '{path}'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"{key} '{path}' cannot be imported ({err}); fix the path or put its module on PYTHONPATH") from err
