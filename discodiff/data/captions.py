"""Caption file formats: ``{track_id: [caption, ...]}`` on disk, written by the renderer and read by ``prepare``.

- ``captions.jsonl`` (the stem layout's file, :data:`~discodiff.data.layout.CAPTIONS_FILE`):
  ``{"track_id": ..., "captions": [...], ...}`` per line, one line per track; other keys are kept
  (:func:`write_captions`, :func:`read_caption_records`, :func:`read_captions`).
- CSV with a header ``track_id,caption``: one caption per row; a track may have several rows.
- a ``datasets`` directory (``save_to_disk``) with a ``track_id`` column and a ``captions`` (list of
  strings) or ``caption`` (string) column.

:func:`read_caption_source` reads any of the three (what ``discodiff prepare --captions`` accepts).
Generating captions for rendered pieces is not a file format: see :mod:`discodiff.corpus.corpus_captions`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable


def write_captions(path: str | Path, records: Iterable[dict]) -> Path:
    """Write ``captions.jsonl``: one JSON object per record, each with ``track_id`` and ``captions``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        if not isinstance(record.get("track_id"), str) or not isinstance(record.get("captions"), list):
            raise ValueError(f"caption record needs 'track_id' (str) and 'captions' (list): {record!r}")
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_caption_records(path: str | Path) -> list[dict]:
    """The records of a ``captions.jsonl`` file, validated; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such captions file")
    records, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err})") from err
        track_id, captions = record.get("track_id"), record.get("captions")
        if not isinstance(track_id, str) or not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"{path}:{number}: needs 'track_id' (string) and 'captions' (list of strings)")
        if track_id in seen:
            raise ValueError(f"{path}:{number}: track '{track_id}' appears twice; keep one line per track")
        seen.add(track_id)
        records.append(record)
    return records


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """``{track_id: [caption, ...]}`` from a ``captions.jsonl`` file."""
    return {record["track_id"]: record["captions"] for record in read_caption_records(path)}


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
