"""Self-supervised frame features for the semantic tokenizer: a hidden layer of HuBERT or MERT through ``transformers``.

- :class:`SSLFeatures` — a :class:`~discodiff.conditioning.semantic.FeatureExtractor` over a HuBERT-like model:
  ``audio [B, 1, T]`` at its ``sample_rate`` → ``hidden_states[layer]`` as ``[B, L, hidden_size]`` float32,
  ``L`` frames at ``sample_rate / prod(config.conv_stride)`` per second (50 Hz for HuBERT at 16 kHz, 75 Hz for MERT
  at 24 kHz).
- :func:`load_ssl_features` — the anchors' extractors by kind: ``hubert`` (HAFM: ``facebook/hubert-base-ls960``,
  layer 9, 16 kHz) and ``mert`` (Llambada: ``m-a-p/MERT-v1-95M``, layer 7, 24 kHz), from a hub id or a
  ``save_pretrained`` directory.
- :func:`build_tiny_hubert` — a seeded random 2-layer ``HubertModel`` (hidden 32, 50 Hz at 16 kHz) for tests.

MERT's hub repository holds its own model code (``MERTModel``, loaded with ``trust_remote_code=True``), written for
the ``transformers`` of its time; this module runs it as is from a local directory or the cache, and cannot check
it here (no weights offline). A MERT directory whose ``config.json`` says ``model_type: hubert`` loads as a plain
``HubertModel`` without remote code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..audio import resample
from .text import load_or_raise
from ..errors import AudioError, ConditioningError, ConfigError, is_integer
from ..model_files import state_dict_fingerprint

LOCAL_FIX = "re-save the model (save_pretrained) or copy the directory again"
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class SSLDefaults:
    """What the anchors use for one kind of extractor; ``normalize`` is the input normalisation it was trained with."""

    id: str
    layer: int
    sample_rate: int
    normalize: bool


# HuBERT base was pretrained on raw waveforms (fairseq ``task.normalize: false``, as its L9 k-means units were
# dumped; with bias-free convs and a group norm first it is invariant to gain and offset anyway); MERT's
# preprocessor_config.json sets ``do_normalize: true``.
SSL_KINDS: dict[str, SSLDefaults] = {
    "hubert": SSLDefaults("facebook/hubert-base-ls960", 9, 16000, False),
    "mert": SSLDefaults("m-a-p/MERT-v1-95M", 7, 24000, True),
}


class SSLFeatures:
    """``hidden_states[layer]`` of a frozen HuBERT-like ``model`` as frame features.

    ``audio [B, 1, T]`` float at ``sample_rate`` → ``[B, L, hidden_size]`` float32, ``L = frames_for(T)``. With
    ``normalize`` each example is scaled to zero mean and unit variance first, as ``Wav2Vec2FeatureExtractor`` does
    with ``do_normalize``. Layer 0 is the input of the first transformer layer, layer ``i`` the output of layer ``i``.
    Audio longer than ``chunk_seconds`` (None: any length at once) runs in windows of that many frames, so memory
    stays that of one window (attention grows with ``L²``: 3 min of HuBERT is 9,000 frames). Each window's samples
    overlap the next by the conv encoder's receptive field less one hop, so its frames are exactly the whole
    signal's frames ``f0 … f1 − 1`` (the same grid, no frame lost or doubled at a join); the transformer, and
    HuBERT base's group norm after the first conv, see each window alone, as both models were trained on excerpts
    of seconds. The description names the extractor
    (``name``), its settings and its weights' fingerprint.
    """

    def __init__(self, model: nn.Module, layer: int, sample_rate: int, name: str = "ssl", normalize: bool = False,
                 chunk_seconds: float | None = 30.0):
        config = getattr(model, "config", None)
        if not all(hasattr(config, key) for key in ("conv_stride", "conv_kernel", "num_hidden_layers", "hidden_size")):
            raise ConfigError(f"SSLFeatures needs a HuBERT-like transformers model (config with conv_stride, "
                              f"conv_kernel, num_hidden_layers, hidden_size), got {type(model).__name__}")
        layers = int(config.num_hidden_layers)
        if not is_integer(layer) or not 0 <= layer <= layers:
            raise ConfigError(f"SSLFeatures needs layer as an integer in 0…{layers} (hidden_states of a "
                              f"{layers}-layer model; 0 is the input of the first layer), got {layer!r}")
        if not is_integer(sample_rate) or sample_rate < 1:
            raise ConfigError(f"SSLFeatures needs sample_rate as a positive integer in Hz (the model's input rate, "
                              f"e.g. 16000 for HuBERT, 24000 for MERT), got {sample_rate!r}")
        if chunk_seconds is not None and (isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float))
                                          or not math.isfinite(chunk_seconds) or chunk_seconds <= 0):
            raise ConfigError(f"SSLFeatures needs chunk_seconds as a positive number of seconds (the window of a long "
                              f"input, e.g. 30) or None to attend the whole input at once, got {chunk_seconds!r}")
        self.model = model.eval().requires_grad_(False)
        self.layer = int(layer)
        self.sample_rate = int(sample_rate)
        self.name = str(name)
        self.normalize = bool(normalize)
        self.hop_length = math.prod(int(stride) for stride in config.conv_stride)
        self.chunk_frames = None if chunk_seconds is None else max(1, int(chunk_seconds * self.frame_rate))
        self._description: str | None = None

    @property
    def frame_rate(self) -> float:
        """Frames per second: ``sample_rate / prod(config.conv_stride)``."""
        return self.sample_rate / self.hop_length

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def description(self) -> str:
        if self._description is None:
            self._description = (f"ssl-features {self.name} layer={self.layer} sr={self.sample_rate} "
                                 f"normalize={self.normalize} chunk_frames={self.chunk_frames} "
                                 f"sha256={state_dict_fingerprint(self.model)}")
        return self._description

    @property
    def min_samples(self) -> int:
        """The fewest input samples that give one frame (the receptive field of the conv feature encoder)."""
        need = 1
        for kernel, stride in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride))):
            need = (need - 1) * int(stride) + int(kernel)
        return need

    def frames_for(self, num_samples: int) -> int:
        """Frames of ``num_samples`` input samples: each conv layer gives ``floor((n − kernel) / stride) + 1``."""
        length = num_samples
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            length = (length - int(kernel)) // int(stride) + 1
        return max(length, 0)

    def resample(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``audio [B, 1, T]`` at ``sample_rate`` → ``[B, 1, T']`` at :attr:`sample_rate` (soxr, on the CPU; the
        result goes back to ``audio``'s device), ready for ``__call__``."""
        audio = self._check(audio, check_length=False)
        out = resample(audio.detach().reshape(-1, audio.shape[-1]).cpu(), sample_rate, self.sample_rate)
        return out.reshape(audio.shape[0], 1, -1).to(audio.device)

    @torch.inference_mode()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        audio = self._check(audio)
        parameter = next(self.model.parameters())
        values = audio[:, 0].to(parameter.device, torch.float32)
        if self.normalize:  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, per example
            values = (values - values.mean(dim=1, keepdim=True)) / torch.sqrt(
                values.var(dim=1, unbiased=False, keepdim=True) + 1e-7)
        values = values.to(parameter.dtype)
        total = self.frames_for(values.shape[-1])
        if self.chunk_frames is None or total <= self.chunk_frames:
            return self._hidden(values)
        windows = [values[:, first * self.hop_length : (last - 1) * self.hop_length + self.min_samples]
                   for first, last in ((f, min(f + self.chunk_frames, total)) for f in range(0, total, self.chunk_frames))]
        return torch.cat([self._hidden(window) for window in windows], dim=1)

    def _hidden(self, values: torch.Tensor) -> torch.Tensor:
        """``values [B, T]`` → ``hidden_states[layer]`` ``[B, frames_for(T), hidden_size]`` float32."""
        output = self.model(values, output_hidden_states=True, return_dict=True)
        return output.hidden_states[self.layer].float().contiguous()

    def _check(self, audio: torch.Tensor, check_length: bool = True) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor) or audio.ndim != 3 or audio.shape[1] != 1 \
                or not audio.dtype.is_floating_point:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ConfigError(f"SSLFeatures needs mono float audio [B, 1, T], got {shape}; mix down to one channel "
                              f"and add a batch axis")
        if check_length and audio.shape[-1] < self.min_samples:
            raise AudioError(f"audio of {audio.shape[-1]} samples is shorter than the {self.min_samples} samples "
                             f"({self.min_samples / self.sample_rate:.3g} s at {self.sample_rate} Hz) that give one "
                             f"frame of {self.name}; give longer audio")
        return audio

    def __repr__(self) -> str:
        return (f"SSLFeatures({self.name}, layer={self.layer}, dim={self.dim}, sample_rate={self.sample_rate}, "
                f"frame_rate={self.frame_rate:.4g}, normalize={self.normalize}, chunk_frames={self.chunk_frames})")


# --- loading ----------------------------------------------------------------------------------------


LOCAL_COPY_FIX = "pass a local save_pretrained directory as id_or_path"


def _preprocessor(id_or_path: str) -> dict:
    """The ``preprocessor_config.json`` of a local directory or of a cached hub id, or ``{}`` when there is none."""
    if Path(id_or_path).is_dir():
        file = Path(id_or_path) / PREPROCESSOR_FILE
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(id_or_path, PREPROCESSOR_FILE)
        file = Path(cached) if isinstance(cached, str) else None
    if file is None or not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConditioningError(f"{file}: unreadable or not valid JSON ({err}); {LOCAL_FIX}") from err
    return data if isinstance(data, dict) else {}


def load_ssl_features(
    kind: str,
    id_or_path: str | Path | None = None,
    layer: int | None = None,
    sample_rate: int | None = None,
    normalize: bool | None = None,
    chunk_seconds: float | None = 30.0,
) -> SSLFeatures:
    """The ``kind`` extractor (``hubert`` or ``mert``, see :data:`SSL_KINDS`) from a hub id or a ``save_pretrained``
    directory (None: the kind's default id), frozen, in float32.

    ``layer`` (None: the kind's default) indexes ``hidden_states``. ``sample_rate`` and ``normalize`` (None) come
    from the model's ``preprocessor_config.json`` (``sampling_rate``, ``do_normalize``) when it has one, else from
    the kind's defaults. ``chunk_seconds``: the window of long inputs (:class:`SSLFeatures`). ``hubert`` loads ``HubertModel`` and refuses other model types; ``mert`` loads a
    ``model_type: hubert`` directory as ``HubertModel`` and anything else with ``AutoModel`` and
    ``trust_remote_code=True`` (it runs the model code stored with the weights). Raises
    :class:`ConditionerNotFoundError` when the model is neither local, nor cached, nor reachable.
    """
    from transformers import AutoConfig, AutoModel, HubertModel

    if kind not in SSL_KINDS:
        raise ConfigError(f"unknown SSL feature kind {kind!r}; choose one of {tuple(SSL_KINDS)}")
    defaults = SSL_KINDS[kind]
    id_or_path = str(id_or_path or defaults.id)
    remote = {"trust_remote_code": True} if kind == "mert" else {}
    config = load_or_raise(AutoConfig.from_pretrained, id_or_path, f"{kind} config", fix=LOCAL_COPY_FIX, **remote)
    if config.model_type == "hubert":
        model = load_or_raise(HubertModel.from_pretrained, id_or_path, f"{kind} weights", fix=LOCAL_COPY_FIX)
    elif kind == "mert":
        model = load_or_raise(AutoModel.from_pretrained, id_or_path, f"{kind} weights", fix=LOCAL_COPY_FIX, **remote)
    else:
        raise ConfigError(f"'{id_or_path}' holds a '{config.model_type}' model, not a HuBERT model; pass a HuBERT "
                          f"model or choose another kind ({tuple(SSL_KINDS)})")
    preprocessor = _preprocessor(id_or_path)
    if sample_rate is None:
        sample_rate = int(preprocessor.get("sampling_rate", defaults.sample_rate))
    if normalize is None:
        normalize = bool(preprocessor.get("do_normalize", defaults.normalize))
    return SSLFeatures(model.float(), defaults.layer if layer is None else layer, sample_rate, name=kind,
                       normalize=normalize, chunk_seconds=chunk_seconds)


def build_tiny_hubert(seed: int = 0, **overrides):
    """A seeded random ``transformers.HubertModel`` in eval mode: hidden 32, 2 layers, a 4-layer conv encoder of
    strides (5, 4, 4, 4) (50 Hz at 16 kHz, like HuBERT base); ``overrides`` change ``HubertConfig`` fields. Its
    features are not meaningful."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(**{
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (16, 16, 16, 16), "conv_stride": (5, 4, 4, 4), "conv_kernel": (10, 4, 4, 4),
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, **overrides,
    })
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HubertModel(config).eval()


TINY_SSL = "tiny"
TINY_SSL_LAYER = 1


def resolve_ssl_features(kind: str, id_or_path: str | Path | None = None, layer: int | None = None) -> SSLFeatures:
    """The one resolver of SSL extractor ids: ``tiny`` is always ``build_tiny_hubert(seed=0)`` at 16 kHz (layer 1
    unless given; for tests and offline demos, not meaningful), anything else :func:`load_ssl_features`."""
    if id_or_path is not None and str(id_or_path) == TINY_SSL:
        return SSLFeatures(build_tiny_hubert(seed=0), TINY_SSL_LAYER if layer is None else layer, 16000, name=kind)
    return load_ssl_features(kind, id_or_path, layer)
