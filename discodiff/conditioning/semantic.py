"""The semantic tokenizer of the AR family: frame features of a stem → k-means tokens.

- :class:`FeatureExtractor` — the protocol of a frame-feature extractor: ``sample_rate``, ``frame_rate``, ``dim``,
  ``description`` and ``__call__(audio [B, 1, T] at its sample_rate) → features [B, L, dim]``.
- :class:`CodecFeatures` — the weight-free-offline extractor: the pre-snap latents of the first ``codebooks``
  codebooks of our own DAC codec (its latent query, :meth:`DacCodec.encode`, first ``codebooks · d`` channels) as
  frames × dim. Codebook 0 carries the content (pitch, timbre, phonetic colour) the coarse stages condition on.
- :func:`noisy` — SingSong's noisy-vocal featurisation (Donahue et al. 2023): white Gaussian noise added to the
  vocal before features, so the tokens of a separated vocal do not carry leaked accompaniment detail.
- :class:`SemanticTokenizer` — k-means centroids fitted with scikit-learn's ``MiniBatchKMeans``
  (:meth:`~SemanticTokenizer.fit`), nearest-centroid assignment on the features' device, chunked over frames
  (:meth:`~SemanticTokenizer.assign`), saved as safetensors with a JSON metadata header.

The self-supervised extractors of the anchors — HuBERT layer 9 at 50 Hz (HAFM) and MERT layer 7 (Llambada),
through ``transformers`` with tiny random configs offline — follow the same protocol in
:mod:`discodiff.conditioning.ssl` (:class:`~discodiff.conditioning.ssl.SSLFeatures`, ``load_ssl_features``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..codec import DacCodec
from ..errors import ConfigError
from ..outputs import atomic_file

DEFAULT_K = 500
DEFAULT_CHUNK_FRAMES = 16384
METADATA_KEY = "discodiff.semantic_tokenizer"
FORMAT_VERSION = 1


@runtime_checkable
class FeatureExtractor(Protocol):
    """Frame features of mono audio. ``__call__(audio [B, 1, T] float at sample_rate) → [B, L, dim]`` float32,
    ``L`` frames at ``frame_rate`` per second. ``description`` names the extractor and its weights (it is stored
    with a fitted tokenizer, so tokens are only read against the features they were fitted on)."""

    sample_rate: int
    frame_rate: float
    dim: int
    description: str

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


class CodecFeatures:
    """The latent query of the first ``codebooks`` codebooks of ``codec`` as frame features.

    ``audio [B, 1, T]`` at ``codec.sample_rate`` → ``[B, L, codebooks · codec.codebook_dim]`` float32 with
    ``L = codec.frames_for(T)`` frames at ``codec.frame_rate`` (the pre-snap projections, before the codebook
    lookup, so nearby sounds stay nearby). The description pins the codec by its weights' fingerprint.
    """

    def __init__(self, codec: DacCodec, codebooks: int = 1, **chunking):
        if isinstance(codebooks, bool) or not isinstance(codebooks, int) or not 1 <= codebooks <= codec.n_codebooks:
            raise ConfigError(f"CodecFeatures needs codebooks as an integer in 1…{codec.n_codebooks} (the codec's "
                              f"codebooks), got {codebooks!r}")
        self.codec = codec
        self.codebooks = codebooks
        self.chunking = {"progress": False, **chunking}
        self._description: str | None = None

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    @property
    def dim(self) -> int:
        return self.codebooks * self.codec.codebook_dim

    @property
    def description(self) -> str:
        if self._description is None:
            self._description = (f"codec-features codebooks={self.codebooks} d={self.codec.codebook_dim} "
                                 f"codec-sha256={self.codec.fingerprint()}")
        return self._description

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        latents = self.codec.encode(audio, **self.chunking)  # [B, K·d, L]; checks the audio's shape
        return latents[:, : self.dim].transpose(1, 2).float().contiguous()

    def __repr__(self) -> str:
        return f"CodecFeatures(codebooks={self.codebooks}, dim={self.dim}, frame_rate={self.frame_rate:.4g})"


def noisy(audio: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``audio`` plus white Gaussian noise of standard deviation ``std × RMS(audio)`` (SingSong's featurisation).

    ``std`` is relative to each example's RMS (over its channels and samples), so it is a noise-to-signal
    amplitude ratio independent of level (``std=0.1`` is a signal-to-noise ratio of 20 dB); a silent example
    stays silent. The noise is drawn on ``generator``'s device from ``generator`` (the same generator state gives
    the same noise) and added in float32; the result has ``audio``'s shape, dtype and device.
    """
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        raise ConfigError(f"noisy() needs std as a finite number ≥ 0 (relative to the signal's RMS), got {std!r}")
    if not isinstance(audio, torch.Tensor) or audio.ndim < 2 or not audio.dtype.is_floating_point:
        raise ConfigError(f"noisy() needs float audio [B, …, T], got "
                          f"{tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__}")
    signal = audio.float()
    rms = signal.pow(2).mean(dim=tuple(range(1, audio.ndim)), keepdim=True).sqrt()
    device = generator.device if generator is not None else signal.device
    noise = torch.randn(audio.shape, generator=generator, device=device, dtype=torch.float32).to(signal.device)
    return (signal + std * rms * noise).to(audio.dtype)


def _frames(features, dim: int | None) -> np.ndarray:
    """One item of features (``[B, L, dim]`` or ``[L, dim]``, tensor or array) → float32 ``[N, dim]``."""
    array = features.detach().to("cpu", torch.float32).numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features, dtype=np.float32)
    if array.ndim not in (2, 3) or array.shape[-1] < 1:
        raise ConfigError(f"features must be [B, L, dim] or [L, dim], got shape {array.shape}")
    if dim is not None and array.shape[-1] != dim:
        raise ConfigError(f"features of dim {array.shape[-1]} after features of dim {dim}; every item must come "
                          f"from the same extractor")
    array = array.reshape(-1, array.shape[-1])
    if not np.isfinite(array).all():
        raise ConfigError("features contain NaN or infinite values; check the audio and the extractor")
    return array


class SemanticTokenizer:
    """k-means centroids ``[k, dim]`` float32 over frame features, with the extractor's description and frame rate.

    ``assign`` maps features to the index of the nearest centroid (Euclidean), the tokens of the semantic stage.
    """

    def __init__(self, centroids: torch.Tensor, description: str = "", frame_rate: float | None = None):
        centroids = torch.as_tensor(centroids).detach().to("cpu", torch.float32).contiguous()
        if centroids.ndim != 2 or centroids.shape[0] < 2 or centroids.shape[1] < 1:
            raise ConfigError(f"a semantic tokenizer needs centroids [k ≥ 2, dim ≥ 1], "
                              f"got {tuple(centroids.shape)}")
        if not torch.isfinite(centroids).all():
            raise ConfigError("a semantic tokenizer's centroids contain NaN or infinite values")
        self.centroids = centroids
        self.description = str(description)
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def metadata(self) -> dict:
        return {"format": FORMAT_VERSION, "k": self.k, "dim": self.dim, "extractor": self.description,
                "frame_rate": self.frame_rate}

    def __repr__(self) -> str:
        return (f"SemanticTokenizer(k={self.k}, dim={self.dim}, frame_rate={self.frame_rate}, "
                f"extractor={self.description!r})")

    # --- fitting ------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: Iterable,
        k: int = DEFAULT_K,
        seed: int = 0,
        batch_size: int = 4096,
        n_init: int = 3,
        max_iter: int = 100,
        extractor: FeatureExtractor | None = None,
        description: str | None = None,
        frame_rate: float | None = None,
    ) -> "SemanticTokenizer":
        """Fit ``k`` centroids to every frame of ``features`` (an iterable of ``[B, L, dim]`` or ``[L, dim]``
        tensors or arrays) with ``sklearn.cluster.MiniBatchKMeans`` (``n_init`` fixed, ``random_state=seed``), so
        one seed and one input give the same centroids. The frames are gathered in memory as float32: for a large
        corpus pass a subsample (HAFM and Llambada fit on a few hours of frames).

        The description and frame rate stored with the tokenizer come from ``extractor`` (or are given directly).
        Raises :class:`ConfigError` for ``k < 2``, ``k`` above the number of frames, inconsistent dims, or
        non-finite features.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ConfigError(f"a semantic tokenizer needs k as an integer ≥ 2 clusters, got {k!r}")
        for name, value in (("batch_size", batch_size), ("n_init", n_init), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SemanticTokenizer.fit needs {name} as a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(f"SemanticTokenizer.fit needs seed as an integer in 0…2³²−1, got {seed!r}")
        parts, dim = [], None
        for item in features:
            part = _frames(item, dim)
            dim = part.shape[1]
            parts.append(part)
        frames = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        if frames.shape[0] < k:
            raise ConfigError(f"k={k} clusters need at least {k} feature frames, got {frames.shape[0]}; "
                              f"give more audio or a smaller k")
        from sklearn.cluster import MiniBatchKMeans

        kmeans = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init=n_init, max_iter=max_iter,
                                 random_state=seed)
        kmeans.fit(frames)
        if extractor is not None:
            description = extractor.description if description is None else description
            frame_rate = extractor.frame_rate if frame_rate is None else frame_rate
        return cls(torch.from_numpy(kmeans.cluster_centers_.astype(np.float32)), description or "", frame_rate)

    # --- assignment ---------------------------------------------------------------------------------

    def _centroids_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            centroids = self.centroids.to(device)
            self._on_device[device] = (centroids, centroids.pow(2).sum(dim=1))
        return self._on_device[device]

    @torch.inference_mode()
    def assign(self, features: torch.Tensor, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> torch.Tensor:
        """``features [B, L, dim]`` → tokens ``[B, L]`` int64: the nearest centroid of every frame, on the features'
        device, ``chunk_frames`` frames at a time (memory ``chunk_frames × k`` floats).

        Distances are ``‖c‖² − 2 x·c`` in float32 (``‖x‖²`` does not change the minimum), as scikit-learn's
        ``predict`` computes them; ties go to the lower index. Raises :class:`ConfigError` for a dim other than
        the tokenizer's.
        """
        if not isinstance(features, torch.Tensor) or features.ndim != 3 or not features.dtype.is_floating_point:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ConfigError(f"assign needs float features [B, L, dim={self.dim}], got {shape}")
        if features.shape[-1] != self.dim:
            raise ConfigError(f"features of dim {features.shape[-1]} given to a tokenizer fitted on dim {self.dim} "
                              f"({self.description or 'unknown extractor'}); use the extractor it was fitted with")
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ConfigError(f"assign needs chunk_frames as a positive integer, got {chunk_frames!r}")
        batch, length, _ = features.shape
        centroids, squared = self._centroids_on(features.device)
        flat = features.reshape(-1, self.dim)
        tokens = torch.empty(flat.shape[0], dtype=torch.long, device=features.device)
        for start in range(0, flat.shape[0], chunk_frames):
            chunk = flat[start : start + chunk_frames].float()
            distances = torch.addmm(squared, chunk, centroids.T, beta=1.0, alpha=-2.0)
            tokens[start : start + chunk.shape[0]] = distances.argmin(dim=1)
        return tokens.reshape(batch, length)

    def tokenize(self, extractor: FeatureExtractor, audio: torch.Tensor, noise_std: float = 0.0,
                 generator: torch.Generator | None = None, **assign_kwargs) -> torch.Tensor:
        """``audio [B, 1, T]`` → tokens ``[B, L]``: optional :func:`noisy` (``noise_std > 0``), ``extractor``,
        :meth:`assign`. Raises :class:`ConfigError` if ``extractor`` is not the one the tokenizer was fitted with
        (by description, when both are known)."""
        if self.description and extractor.description != self.description:
            raise ConfigError(f"this tokenizer was fitted on features of {self.description!r}, not "
                              f"{extractor.description!r}")
        if noise_std:
            audio = noisy(audio, noise_std, generator)
        return self.assign(extractor(audio), **assign_kwargs)

    # --- save / load --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the centroids (``centroids`` tensor) and the metadata (one JSON string under
        :data:`METADATA_KEY`) as a safetensors file, atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_file(path) as temporary:
            save_file({"centroids": self.centroids}, str(temporary),
                      metadata={METADATA_KEY: json.dumps(self.metadata, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SemanticTokenizer":
        """Read a tokenizer written by :meth:`save` (on the CPU). Raises :class:`ConfigError` for a missing file or
        one that is not a semantic tokenizer (not safetensors, no tokenizer metadata, or centroids that disagree
        with it)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no semantic tokenizer file at {path}; "
                              f"fit one with SemanticTokenizer.fit(...).save(path)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
                names = set(handle.keys())
                centroids = handle.get_tensor("centroids") if "centroids" in names else None
        except (SafetensorError, OSError, ValueError) as error:
            raise ConfigError(f"{path} is not a semantic tokenizer "
                              f"(not a readable safetensors file: {error})") from None
        try:
            metadata = json.loads(header[METADATA_KEY])
            k, dim, description, frame_rate = (metadata["k"], metadata["dim"], metadata["extractor"],
                                               metadata["frame_rate"])
        except (KeyError, TypeError, json.JSONDecodeError):
            raise ConfigError(f"{path} is not a semantic tokenizer (no {METADATA_KEY!r} metadata with k, dim, "
                              f"extractor and frame_rate)") from None
        if metadata.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{path} is a semantic tokenizer of format {metadata.get('format')!r}; this version "
                              f"reads format {FORMAT_VERSION}")
        if centroids is None or centroids.dtype != torch.float32 or tuple(centroids.shape) != (k, dim):
            shape = None if centroids is None else (tuple(centroids.shape), str(centroids.dtype))
            raise ConfigError(f"{path} is not a semantic tokenizer: its metadata says centroids [{k}, {dim}] float32, "
                              f"the file holds {shape}")
        return cls(centroids, description, frame_rate)
