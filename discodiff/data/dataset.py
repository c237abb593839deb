"""Training items from a prepared latent cache: random fixed-length crops of its windows.

Every random choice of an item (crop position, caption, vocal noise) comes from
``numpy.random.default_rng([seed, epoch, index])``, so the same ``(seed, epoch, index)`` always gives
the same item, in any process, after any resume. Call :meth:`LatentCropDataset.set_epoch` before
building each epoch's iterator (with ``persistent_workers=False``, so workers get the new epoch).

Noisy vocals (SingSong): the vocal conditioning is perturbed in latent space, at load time, by
Gaussian noise of standard deviation ``noisy_vocal_std`` measured in *normalised* latent units (the
cache's :class:`~discodiff.latents.LatentStats`, which the pipeline also uses to normalise vocal
latents), i.e. raw noise ``noisy_vocal_std · std[channel]`` on real frames only, redrawn for every
item and epoch. As in SingSong, it keeps the model from relying on faint traces of the accompaniment
that source separation leaves in training vocals and that clean vocals at inference lack.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..latents import LatentStats
from .cache import CacheLayout, CodecInfo
from .text_cache import TextEmbeddingCache

DEFAULT_NOISY_VOCAL_STD = 0.1


class LatentCropDataset(torch.utils.data.Dataset):
    """One item per cached window: a crop of ``N`` frames, ``N`` = ``crop_frames`` rounded down to a
    multiple of ``frame_multiple``. Windows shorter than ``N`` are zero-padded and masked.

    Item::

        latents        float32 [K·d, N]  raw (un-normalised) accompaniment latents
        vocal_latents  float32 [K·d, N]  raw vocal latents with noisy-vocal augmentation
        frame_mask     bool [N]          True = real frame
        caption        str               one of the track's captions ("" when it has none)
        track_id       str
        text_sequence [S, D], text_mask [S], text_pooled [P]   with ``text_cache=True``
        semantic       long [Ns]         with ``semantic_tokens=True``: accompaniment tokens of the same crop by time
        vocal_semantic long [Ns]         the vocal's tokens (``discodiff tokenize``; 0 on padding)
        semantic_mask  bool [Ns]         True = real token

    Semantic tokens (:mod:`.tokenize`) are cropped in sync with the latents, by time: with codec frame rate ``rc``
    (``codec.json``) and semantic rate ``rs`` (``semantic/info.json``), a crop of codec frames ``[start, start+N)``
    reads semantic frames ``[s, s + Ns)`` with ``s = floor(start · rs / rc)`` and ``Ns = round(N · rs / rc)``,
    fixed per dataset; frames past the window's ``num_semantic_frames`` or past ``round(length · rs / rc)`` for a
    crop of ``length`` real codec frames are padding. They use no random draw of their own, so items are the
    same with or without them.

    Args:
        data_dir: a cache written by :func:`~discodiff.data.prepare.prepare_latent_cache`.
        crop_frames: frames per crop before rounding.
        frame_multiple: the U-Net's total downsampling factor, ``2**(levels - 1)``.
        seed: base seed of every item's generator.
        noisy_vocal_std: vocal noise in normalised latent units (0: off); see the module docstring.
        text_cache: attach the cached text-encoder outputs of the drawn caption
            (:func:`~discodiff.data.text_cache.cache_text_embeddings` must have run).
        semantic_tokens: attach the crop's semantic tokens (:func:`~discodiff.data.tokenize.tokenize_cache` must
            have run for this version of the cache; a :class:`~discodiff.errors.DataError` otherwise).
    """

    def __init__(
        self,
        data_dir: str | Path,
        crop_frames: int,
        frame_multiple: int = 1,
        seed: int = 0,
        noisy_vocal_std: float = DEFAULT_NOISY_VOCAL_STD,
        text_cache: bool = False,
        semantic_tokens: bool = False,
    ):
        from datasets import load_from_disk

        if frame_multiple < 1 or crop_frames < frame_multiple:
            raise ValueError(f"crop_frames={crop_frames} must be at least frame_multiple={frame_multiple} (>= 1)")
        if noisy_vocal_std < 0:
            raise ValueError(f"noisy_vocal_std={noisy_vocal_std}: must be >= 0 (0 turns the augmentation off)")
        layout = CacheLayout(Path(data_dir))
        dataset = load_from_disk(str(layout.require_dataset()))
        self.rows = dataset.select_columns(["track_id", "num_frames", "latents", "vocal_latents", "captions"]).with_format("numpy")
        self.latent_stats = LatentStats.load(layout.latent_stats_file)
        self.codec_info = CodecInfo.load(layout.codec_file)
        self.crop_frames = crop_frames // frame_multiple * frame_multiple
        self.seed = seed
        self.epoch = 0
        self.noisy_vocal_std = noisy_vocal_std
        self.text_embeddings = TextEmbeddingCache(layout.text_cache_dir) if text_cache else None
        per_channel_std = self.latent_stats.std.repeat_interleave(self.latent_stats.codebook_dim) \
            if self.latent_stats.per == "codebook" else self.latent_stats.std
        self._vocal_noise_scale = (noisy_vocal_std * per_channel_std).numpy().astype(np.float32)[:, None]
        self.semantic_rows = None
        if semantic_tokens:
            from .tokenize import SEMANTIC_COLUMNS, load_semantic_tokens

            semantic, info = load_semantic_tokens(layout, dataset)
            self.semantic_rows = semantic.select_columns(list(SEMANTIC_COLUMNS)).with_format("numpy")
            self.semantic_rate_ratio = float(info["frame_rate"]) / self.codec_info.frame_rate  # rs / rc
            self.semantic_frames = max(1, round(self.crop_frames * self.semantic_rate_ratio))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row = self.rows[index]
        real = int(row["num_frames"])
        start = int(rng.integers(0, real - self.crop_frames + 1)) if real > self.crop_frames else 0
        length = min(real, self.crop_frames)
        captions = row["captions"]
        caption = str(captions[rng.integers(len(captions))]) if len(captions) else ""
        latents = np.zeros((row["latents"].shape[0], self.crop_frames), np.float32)
        vocals = np.zeros_like(latents)
        latents[:, :length] = row["latents"][:, start : start + length]
        vocals[:, :length] = row["vocal_latents"][:, start : start + length]
        if self.noisy_vocal_std > 0:
            vocals[:, :length] += rng.standard_normal((vocals.shape[0], length), dtype=np.float32) * self._vocal_noise_scale
        mask = np.zeros(self.crop_frames, bool)
        mask[:length] = True
        item = {"latents": torch.from_numpy(latents), "vocal_latents": torch.from_numpy(vocals),
                "frame_mask": torch.from_numpy(mask), "caption": caption, "track_id": str(row["track_id"])}
        if self.text_embeddings is not None:
            item.update(self.text_embeddings[caption])
        if self.semantic_rows is not None:
            item.update(self._semantic_crop(index, start, length))
        return item

    def _semantic_crop(self, index: int, start: int, length: int) -> dict:
        """The semantic tokens of the crop of codec frames ``[start, start + length)`` (see the class docstring)."""
        row = self.semantic_rows[index]
        first = math.floor(start * self.semantic_rate_ratio)
        real = max(0, min(self.semantic_frames, round(length * self.semantic_rate_ratio),
                          int(row["num_semantic_frames"]) - first))
        out = {}
        for name in ("semantic", "vocal_semantic"):
            tokens = np.zeros(self.semantic_frames, np.int64)
            tokens[:real] = row[name][first : first + real]
            out[name] = torch.from_numpy(tokens)
        mask = np.zeros(self.semantic_frames, bool)
        mask[:real] = True
        out["semantic_mask"] = torch.from_numpy(mask)
        return out


def collate_latent_batch(items: list[dict]) -> dict:
    """Stack items of :class:`LatentCropDataset` into a batch::

        latents        float32 [B, K·d, N]
        vocal_latents  float32 [B, K·d, N]
        frame_mask     bool [B, N]
        captions       list[str]
        track_ids      list[str]
        text_sequence  float32 [B, S, D]   zero-padded to the longest  } only when the items
        text_mask      bool [B, S]         True = real token            } carry cached text
        text_pooled    float32 [B, P]                                   }
        semantic       long [B, Ns]        } only when the items carry semantic tokens
        vocal_semantic long [B, Ns]        }
        semantic_mask  bool [B, Ns]        }
    """
    batch = {
        "latents": torch.stack([item["latents"] for item in items]),
        "vocal_latents": torch.stack([item["vocal_latents"] for item in items]),
        "frame_mask": torch.stack([item["frame_mask"] for item in items]),
        "captions": [item["caption"] for item in items],
        "track_ids": [item["track_id"] for item in items],
    }
    if "text_sequence" in items[0]:
        batch["text_sequence"] = torch.nn.utils.rnn.pad_sequence([item["text_sequence"] for item in items], batch_first=True)
        batch["text_mask"] = torch.nn.utils.rnn.pad_sequence([item["text_mask"] for item in items], batch_first=True)
        batch["text_pooled"] = torch.stack([item["text_pooled"] for item in items])
    for name in ("semantic", "vocal_semantic", "semantic_mask"):
        if name in items[0]:
            batch[name] = torch.stack([item[name] for item in items])
    return batch
