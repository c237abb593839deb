"""The on-disk contract of a prepared latent cache: what ``discodiff prepare`` writes and training reads.

::

    OUT/codec.json            the codec the latents come from: id, backend, geometry and weights fingerprint
                              (:class:`CodecInfo`; training refuses a codec that differs)
    OUT/dataset/              ``datasets.load_from_disk`` (memory-mapped Arrow), one row per window:
        track_id       string
        window         int32          the window's position in its track (0, 1, …; filtered ones keep their number)
        start_seconds  float32        where the window starts in the track
        num_frames     int32          real frames; frames from here on are padding (latents 0, codes −1)
        latents        float16 [K·d, F]  accompaniment latent query; F = frames of a full window
        vocal_latents  float16 [K·d, F]  the vocal's latent query (same codec)
        codes          int16   [K, F]    accompaniment codes
        captions       list[string]      the track's captions (empty when it has none)
    OUT/dataset/latent_stats.json  :class:`~discodiff.latents.LatentStats` of the accompaniment latents
    OUT/prepare_report.json   per track: kept windows, skipped windows or track with the reason, warnings;
                              folders that are not tracks, with the reason
    OUT/text_cache/           optional frozen text-encoder outputs per caption (:mod:`.text_cache`)
    OUT/shards/               one finished track per file; what a rerun resumes from
    OUT/semantic/             optional semantic tokens of every row, made by ``discodiff tokenize``
                              (:mod:`.tokenize`, which details the layout):
        info.json                 extractor description, frame_rate, sample_rate, k, noise_std, seed, source,
                                  tokenizer_sha256, dataset_fingerprint (:func:`dataset_fingerprint` of the
                                  dataset the tokens were computed for)
        tokenizer.safetensors     the :class:`~discodiff.conditioning.semantic.SemanticTokenizer`
        shards/<track>.npz        one finished track (what a rerun resumes from), tagged with the tokenizer's
                                  sha256 and the dataset fingerprint
        dataset/                  ``datasets.load_from_disk``, one row per row of ``OUT/dataset``, in its order:
            track_id             string
            window               int32
            num_semantic_frames  int32       real frames; frames from here on are padding (−1)
            semantic             int16 [Ls]  accompaniment tokens; Ls = frames of a full window at the semantic rate
            vocal_semantic       int16 [Ls]  the vocal's tokens (with the optional noisy-vocal featurisation)

The dataset and its statistics are published together: both are built in a hidden sibling folder that
then replaces ``OUT/dataset`` (:func:`discodiff.outputs.atomic_directory`), so a reader sees the old
complete pair or the new one, never rows of one run with the statistics of another. (Caches written
before this layout kept ``latent_stats.json`` next to ``dataset/``; rerunning ``prepare`` resumes and
republishes them.)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..codec import DacCodec
from ..codec.usage import CODE_PADDING  # noqa: F401 (part of the cache contract: padding frames of codes)
from ..errors import DataError
from ..outputs import atomic_file

CODEC_FILE = "codec.json"
LATENT_STATS_FILE = "latent_stats.json"
DATASET_DIR = "dataset"
PREPARE_REPORT_FILE = "prepare_report.json"
TEXT_CACHE_DIR = "text_cache"
SHARDS_DIR = "shards"
SEMANTIC_DIR = "semantic"
SEMANTIC_INFO_FILE = "info.json"
SEMANTIC_TOKENIZER_FILE = "tokenizer.safetensors"
GEOMETRY_FIELDS = ("sample_rate", "hop_length", "n_codebooks", "codebook_dim", "codebook_size")


class UnverifiedCacheWarning(UserWarning):
    """A cache written before its codec's weights fingerprint was recorded: only the codec geometry can be checked."""


@dataclass(frozen=True)
class CodecInfo:
    """The codec a cache was prepared with: its id or path, backend, geometry and weights ``fingerprint``
    (:meth:`DacCodec.fingerprint`; None in caches written before it was recorded)."""

    id: str
    backend: str
    sample_rate: int
    hop_length: int
    n_codebooks: int
    codebook_dim: int
    codebook_size: int
    fingerprint: str | None = None

    @classmethod
    def of(cls, codec: DacCodec, codec_id: str) -> CodecInfo:
        spec = codec.spec
        return cls(codec_id, codec.backend, spec.sample_rate, spec.hop_length, spec.n_codebooks, spec.codebook_dim,
                   spec.codebook_size, codec.fingerprint())

    @property
    def latent_channels(self) -> int:
        """``K · d``."""
        return self.n_codebooks * self.codebook_dim

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def check_compatible(self, codec: DacCodec, codec_id: str | None = None) -> None:
        """Refuse a ``codec`` (the model's; ``codec_id``, default ``codec.source``, names it in messages) whose
        latents are not the cache's: a :class:`DataError` naming every geometry field that differs, or, for the
        same geometry, naming both codecs when the weights fingerprint differs. A cache without a fingerprint
        (written before it was recorded) is accepted with an :class:`UnverifiedCacheWarning`."""
        model_codec = codec_id or codec.source
        named = f" '{model_codec}'" if model_codec else ""
        fix = (f"use a model whose codec is '{self.id}', or re-run `discodiff prepare --codec "
               f"{model_codec or '<the model codec>'}` into a new --out")
        diffs = [f"{name} {getattr(self, name)} vs {getattr(codec.spec, name)}" for name in GEOMETRY_FIELDS
                 if getattr(self, name) != getattr(codec.spec, name)]
        if diffs:
            raise DataError(f"the cache was prepared with codec '{self.id}' and the model's codec{named} differs "
                            f"({', '.join(diffs)}); {fix}")
        if self.fingerprint is None:
            warnings.warn(f"the cache's codec.json (codec '{self.id}') has no 'fingerprint' field (it predates weight "
                          f"fingerprints), so only the geometry of the model's codec{named} was checked, not its "
                          "weights; re-run `discodiff prepare` with the same settings to record it",
                          UnverifiedCacheWarning, stacklevel=2)
        elif self.fingerprint != codec.fingerprint():
            raise DataError(f"the cache was prepared with codec '{self.id}' (weights fingerprint {self.fingerprint[:12]}) "
                            f"and the model's codec{named} has the same geometry but other weights (fingerprint "
                            f"{codec.fingerprint()[:12]}); {fix}")

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(Path(path), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CodecInfo:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class CacheLayout:
    """Paths of a prepared cache rooted at ``root`` (see the module docstring)."""

    root: Path

    @property
    def codec_file(self) -> Path:
        return self.root / CODEC_FILE

    @property
    def latent_stats_file(self) -> Path:
        """Inside :attr:`dataset_dir`, so that both are replaced in one step."""
        return self.dataset_dir / LATENT_STATS_FILE

    @property
    def dataset_dir(self) -> Path:
        return self.root / DATASET_DIR

    @property
    def report_file(self) -> Path:
        return self.root / PREPARE_REPORT_FILE

    @property
    def text_cache_dir(self) -> Path:
        return self.root / TEXT_CACHE_DIR

    @property
    def shards_dir(self) -> Path:
        return self.root / SHARDS_DIR

    @property
    def semantic_dir(self) -> Path:
        """``discodiff tokenize``'s folder (:mod:`.tokenize`)."""
        return self.root / SEMANTIC_DIR

    @property
    def semantic_info_file(self) -> Path:
        return self.semantic_dir / SEMANTIC_INFO_FILE

    @property
    def semantic_tokenizer_file(self) -> Path:
        return self.semantic_dir / SEMANTIC_TOKENIZER_FILE

    @property
    def semantic_shards_dir(self) -> Path:
        return self.semantic_dir / SHARDS_DIR

    @property
    def semantic_dataset_dir(self) -> Path:
        return self.semantic_dir / DATASET_DIR

    def require_dataset(self) -> Path:
        """The dataset directory; ``FileNotFoundError`` naming the command that makes it when missing."""
        if not (self.dataset_dir / "dataset_info.json").is_file() or not self.latent_stats_file.is_file():
            raise FileNotFoundError(f"{self.root} holds no finished latent cache ({DATASET_DIR}/ with "
                                    f"{DATASET_DIR}/{LATENT_STATS_FILE}); make one with "
                                    "`discodiff prepare STEMS_DIR --out <dir>` (a rerun resumes)")
        return self.dataset_dir


def dataset_fingerprint(layout: CacheLayout) -> str:
    """A digest of the published dataset's ``state.json`` (its ``datasets`` fingerprint and files),
    ``dataset_info.json`` (its features) and ``latent_stats.json`` (fitted on its latents, so it changes with
    them): it changes when ``prepare`` republishes other rows, and survives copying the cache."""
    digest = hashlib.sha256()
    for name in ("state.json", "dataset_info.json", LATENT_STATS_FILE):
        path = layout.dataset_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def window_features(latent_channels: int, n_codebooks: int, window_frames: int):
    """``datasets.Features`` of a cache row (see the module docstring), without ``captions``."""
    from datasets import Array2D, Features, Value

    return Features({
        "track_id": Value("string"),
        "window": Value("int32"),
        "start_seconds": Value("float32"),
        "num_frames": Value("int32"),
        "latents": Array2D((latent_channels, window_frames), "float16"),
        "vocal_latents": Array2D((latent_channels, window_frames), "float16"),
        "codes": Array2D((n_codebooks, window_frames), "int16"),
    })


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary path)`` and move the result onto ``path`` in one step
    (:func:`discodiff.outputs.atomic_file`: a kill midway leaves at most a hidden ``.<stem>.tmp-<pid><suffix>``)."""
    with atomic_file(path) as temporary:
        write(temporary)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_atomic`."""
    return write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
