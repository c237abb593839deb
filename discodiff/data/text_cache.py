"""Frozen text-encoder outputs for every caption of a latent cache, computed once so training can skip the encoder.

::

    OUT/text_cache/encoder.json       the encoder: class, source, max_length, sequence_dim, pooled_dim
                                      (:func:`check_text_cache` compares it with the model's encoder)
    OUT/text_cache/embeddings.arrow   one row per distinct caption (and "" when a track has none),
                                      read memory-mapped with ``datasets.Dataset.from_file``:
        caption   string
        sequence  float32 [S, D]   the caption's valid tokens only (S varies per caption)
        pooled    float32 [P]

Values are what the conditioner returns for the caption in a batch (padding masked), kept in float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..errors import DataError
from .cache import CacheLayout, write_atomic, write_text_atomic

ENCODER_FILE = "encoder.json"
EMBEDDINGS_FILE = "embeddings.arrow"

if TYPE_CHECKING:
    from ..conditioning import FrozenTextConditioner


def text_encoder_description(text_conditioner: FrozenTextConditioner) -> dict:
    """What identifies the outputs of ``text_conditioner`` (``encoder.json``; :func:`check_text_cache` compares them)."""
    return {"class": type(text_conditioner).__name__, "source": text_conditioner.source,
            "max_length": text_conditioner.max_length, "sequence_dim": text_conditioner.sequence_dim,
            "pooled_dim": text_conditioner.pooled_dim}


def check_text_cache(directory: str | Path, text_conditioner: FrozenTextConditioner) -> None:
    """Refuse a text cache built by another encoder than ``text_conditioner`` (the model's): a :class:`DataError`
    naming every field of :func:`text_encoder_description` that differs, with both values.

    ``directory`` is a latent cache (``OUT``, as passed to :func:`cache_text_embeddings`) or its ``text_cache``
    folder. A missing or unreadable ``encoder.json`` is a :class:`DataError` too.
    """
    directory = Path(directory)
    folder = directory if (directory / ENCODER_FILE).exists() else CacheLayout(directory).text_cache_dir
    path = folder / ENCODER_FILE
    rebuild = "rebuild it with discodiff.data.text_cache.cache_text_embeddings(data_dir, text_conditioner)"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path}: missing, so the encoder of the text cache {folder} is unknown; {rebuild}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable or not valid JSON ({err}); {rebuild}") from err
    ours = text_encoder_description(text_conditioner)
    if not isinstance(cached, dict):
        raise DataError(f"{path}: not a JSON object describing a text encoder; {rebuild}")
    diffs = [f"{key} {cached.get(key)!r} vs {ours.get(key)!r}" for key in sorted(set(cached) | set(ours))
             if cached.get(key) != ours.get(key)]
    if diffs:
        raise DataError(f"the text cache {folder} was built with another text encoder than the model's "
                        f"({'; '.join(diffs)}: cache vs model); {rebuild} using the model's text encoder, "
                        "or train without the text cache")


def cache_text_embeddings(
    data_dir: str | Path, text_conditioner: FrozenTextConditioner, batch_size: int = 64, progress: bool = True
) -> Path:
    """Encode every distinct caption of the cache at ``data_dir`` once; returns ``OUT/text_cache``."""
    import pyarrow as pa
    from datasets import Array2D, Dataset, Features, List, Value, load_from_disk

    layout = CacheLayout(Path(data_dir))
    track_captions = load_from_disk(str(layout.require_dataset()))["captions"]
    captions = sorted({caption for row in track_captions for caption in (row or [""])})
    features = Features({"caption": Value("string"),
                         "sequence": Array2D((None, text_conditioner.sequence_dim), "float32"),
                         "pooled": List(Value("float32"), length=text_conditioner.pooled_dim)})
    out = layout.text_cache_dir
    out.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        schema = features.arrow_schema
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            starts = range(0, len(captions), batch_size)
            for first in tqdm(starts, desc="text embeddings", unit="batch", disable=not progress):
                batch = captions[first : first + batch_size]
                condition = text_conditioner(batch, device="cpu")
                rows = {"caption": batch,
                        "sequence": [seq[mask].float().numpy() for seq, mask in zip(condition.sequence, condition.mask)],
                        "pooled": condition.pooled.float().numpy()}
                writer.write_table(Dataset.from_dict(rows, features=features).data.table)

    write_atomic(out / EMBEDDINGS_FILE, write)
    write_text_atomic(out / ENCODER_FILE, json.dumps(text_encoder_description(text_conditioner), indent=2) + "\n")
    return out


class TextEmbeddingCache:
    """Read side of :func:`cache_text_embeddings`: ``cache[caption]`` →
    ``{"text_sequence": [S, D], "text_mask": bool [S] (all True), "text_pooled": [P]}``."""

    def __init__(self, directory: str | Path):
        from datasets import Dataset

        directory = Path(directory)
        if not (directory / EMBEDDINGS_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no text cache; build it with "
                                    "discodiff.data.text_cache.cache_text_embeddings(data_dir, text_conditioner)")
        self.encoder = json.loads((directory / ENCODER_FILE).read_text(encoding="utf-8"))
        self.rows = Dataset.from_file(str(directory / EMBEDDINGS_FILE)).with_format("numpy")
        self.index = {caption: i for i, caption in enumerate(self.rows.with_format(None)["caption"])}
        self.directory = directory

    def __contains__(self, caption: str) -> bool:
        return caption in self.index

    def __getitem__(self, caption: str) -> dict[str, torch.Tensor]:
        if caption not in self.index:
            raise KeyError(f"caption {caption!r} is not in the text cache {self.directory}; the captions changed since it "
                           "was built, so rebuild it with cache_text_embeddings")
        row = self.rows[self.index[caption]]
        sequence = torch.from_numpy(row["sequence"])
        return {"text_sequence": sequence, "text_mask": torch.ones(sequence.shape[0], dtype=torch.bool),
                "text_pooled": torch.from_numpy(row["pooled"])}
