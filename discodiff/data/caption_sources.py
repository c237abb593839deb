"""Read ``{track_id: [caption, ...]}`` from the caption sources ``discodiff prepare`` accepts.

- ``captions.jsonl`` (the stem layout's file): ``{"track_id": ..., "captions": [...]}`` per line.
- CSV with a header ``track_id,caption``: one caption per row; a track may have several rows.
- a ``datasets`` directory (``save_to_disk``) with a ``track_id`` column and a ``captions`` (list of
  strings) or ``caption`` (string) column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .layout import read_captions


def read_caption_source(path: str | Path) -> dict[str, list[str]]:
    """Captions per track id from a ``.jsonl`` file, a ``.csv`` file or a ``datasets`` directory."""
    path = Path(path)
    if path.is_dir():
        return _read_dataset_captions(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such captions file or dataset directory")
    if path.suffix.lower() == ".jsonl":
        return read_captions(path)
    if path.suffix.lower() == ".csv":
        return _read_csv_captions(path)
    raise ValueError(f"{path}: captions must be a .jsonl file, a .csv file (track_id,caption) or a datasets directory")


def _read_csv_captions(path: Path) -> dict[str, list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"track_id", "caption"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: the CSV needs a header with 'track_id' and 'caption' columns, got {reader.fieldnames}")
        captions: dict[str, list[str]] = {}
        for row in reader:
            captions.setdefault(row["track_id"], []).append(row["caption"])
    return captions


def _read_dataset_captions(path: Path) -> dict[str, list[str]]:
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError as err:
        raise ValueError(f"{path}: not a datasets directory (save_to_disk) ({err})") from err
    column = next((name for name in ("captions", "caption") if name in dataset.column_names), None)
    if "track_id" not in dataset.column_names or column is None:
        raise ValueError(f"{path}: the dataset needs a 'track_id' column and a 'captions' or 'caption' column, "
                         f"got {dataset.column_names}")
    captions: dict[str, list[str]] = {}
    for track_id, value in zip(dataset["track_id"], dataset[column]):
        captions.setdefault(track_id, []).extend([value] if isinstance(value, str) else value)
    return captions
