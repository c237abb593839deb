"""``DacCodec``: audio ⇄ DAC latent query ⇄ codes, one API over two DAC implementations.

Shapes: audio ``[B, 1, T]`` float32 at :attr:`DacCodec.sample_rate`; latents ``[B, K·d, L]`` (the
pre-snap per-codebook projections, codebook ``i`` in channels ``d·i : d·(i+1)``); codes
``[B, K, L]`` int64; ``L = ceil(T / hop_length)``.

Long inputs are processed in chunks with ``context`` frames of overlap on each side that are
computed and then discarded ("overlap-discard"); DAC is convolutional, so when the context covers
the receptive field the seams match the whole-signal result up to float rounding, and peak memory
is set by the chunk, not the duration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CodecError, is_real
from ..model_files import state_dict_fingerprint
from .backends import DEFAULT_CODEC, CodecSpec, load_backend, spec_from_descript_model, spec_from_transformers_config

DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_CONTEXT_SECONDS = 0.5
MIN_CHUNK_SECONDS = 1.0  # shorter chunks multiply the overlap work (one-frame chunks take a day for ten minutes)


def check_chunking(chunk_seconds: float | None, context_seconds: float) -> None:
    """Raise :class:`CodecError` unless ``chunk_seconds`` is None (whole signal) or a finite number of at
    least :data:`MIN_CHUNK_SECONDS`, and ``context_seconds`` a finite number >= 0."""
    if chunk_seconds is not None and (not is_real(chunk_seconds) or not math.isfinite(chunk_seconds)
                                      or chunk_seconds < MIN_CHUNK_SECONDS):
        raise CodecError(f"chunk_seconds={chunk_seconds!r}: must be at least {MIN_CHUNK_SECONDS:g} s "
                         f"(default {DEFAULT_CHUNK_SECONDS:g}), or None to process the whole signal at once")
    if not is_real(context_seconds) or not math.isfinite(context_seconds) or context_seconds < 0:
        raise CodecError(f"context_seconds={context_seconds!r}: must be a finite number of seconds >= 0 "
                         f"(default {DEFAULT_CONTEXT_SECONDS:g})")


class DacCodec(nn.Module):
    """Frozen DAC in eval mode behind a backend-independent API (see module docstring for shapes)."""

    def __init__(self, model: nn.Module, spec: CodecSpec, backend: str, source: str | None = None):
        super().__init__()
        self.model = model
        self.spec = spec
        self.backend = backend
        self.source = source
        self._fingerprint: str | None = None
        self.requires_grad_(False)
        self.train(False)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path = DEFAULT_CODEC, backend: str = "transformers") -> "DacCodec":
        """Load a codec: hub id or local dir (``transformers``), or ``.pth`` file (``descript``), in float32 whatever
        the stored precision (the shipped codec is stored in fp16); ``codec.to(dtype=…)`` casts it afterwards."""
        model, spec = load_backend(id_or_path, backend)
        return cls(model.float(), spec, backend, str(id_or_path))

    @classmethod
    def from_model(cls, model: nn.Module, backend: str) -> "DacCodec":
        """Wrap an already-built ``transformers.DacModel`` or ``dac.DAC``."""
        if backend == "transformers":
            return cls(model, spec_from_transformers_config(model.config), backend)
        return cls(model, spec_from_descript_model(model), backend)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a ``transformers`` DAC directory (descript weights are converted first)."""
        model = self.model
        if self.backend == "descript":
            from .convert import descript_to_transformers

            model = descript_to_transformers(model)
        model.save_pretrained(str(directory))
        return Path(directory)

    def train(self, mode: bool = True) -> "DacCodec":
        """Always eval: DAC in train mode applies quantizer dropout and ignores ``n_quantizers``."""
        return super().train(False)

    # --- geometry ---------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def hop_length(self) -> int:
        return self.spec.hop_length

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (``sample_rate / hop_length``; ~86.13 for 44.1 kHz DAC)."""
        return self.spec.sample_rate / self.spec.hop_length

    @property
    def n_codebooks(self) -> int:
        return self.spec.n_codebooks

    @property
    def codebook_dim(self) -> int:
        return self.spec.codebook_dim

    @property
    def latent_channels(self) -> int:
        """``K · d``: channels of the full latent query (72 for 44.1 kHz DAC)."""
        return self.spec.n_codebooks * self.spec.codebook_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """A sha256 hex digest of the codec's weights: every entry of the wrapped model's ``state_dict`` in sorted
        key order (its name, dtype, shape and bytes). Codecs of the same geometry with other weights differ; the
        same weights give the same digest on any device. The weights are frozen, so it is computed once and kept
        (loading other weights into this instance afterwards is not noticed). It depends on the backend's
        parameter names, so a ``.pth`` codec and its converted ``transformers`` directory differ."""
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.model)
        return self._fingerprint

    def frames_for(self, num_samples: int) -> int:
        """Latent frames ``L`` produced for ``num_samples`` audio samples."""
        return math.ceil(num_samples / self.hop_length)

    # --- encode -------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_with_codes(
        self,
        audio: torch.Tensor,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
        progress: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio [B, 1, T]`` → ``(latents [B, K·d, L], codes [B, K, L])`` in one encoder pass.

        ``chunk_seconds``: None, or at least :data:`MIN_CHUNK_SECONDS` (else :class:`CodecError`).
        """
        check_chunking(chunk_seconds, context_seconds)
        audio = self._check_audio(audio)
        frames = self.frames_for(audio.shape[-1])

        def encode_window(start: int, stop: int) -> torch.Tensor:
            window = audio[..., start * self.hop_length : stop * self.hop_length].to(self.device)
            window = nn.functional.pad(window, (0, (stop - start) * self.hop_length - window.shape[-1]))
            _, codes, latents, _, _ = self.model.quantizer(self.model.encoder(window))
            return torch.cat([latents, codes.to(latents.dtype)], dim=1)

        both = self._chunked(encode_window, frames, chunk_seconds, context_seconds, progress, "encode")
        latents, codes = both.split([self.latent_channels, self.n_codebooks], dim=1)
        return latents.contiguous(), codes.round().long()

    def encode(self, audio: torch.Tensor, **chunking) -> torch.Tensor:
        """``audio [B, 1, T]`` → latent query ``[B, K·d, L]`` (pre-snap projections)."""
        return self.encode_with_codes(audio, **chunking)[0]

    def encode_codes(self, audio: torch.Tensor, **chunking) -> torch.Tensor:
        """``audio [B, 1, T]`` → codes ``[B, K, L]``."""
        return self.encode_with_codes(audio, **chunking)[1]

    # --- latents ⇄ codes ⇄ embedding --------------------------------------------------------------

    @torch.inference_mode()
    def snap(self, latents: torch.Tensor) -> torch.Tensor:
        """Nearest codebook entry (cosine similarity) per codebook: ``[B, k·d, L]`` → codes ``[B, k, L]``.

        ``k`` may be smaller than ``K`` (e.g. primary latents only snap to codebook 0).
        """
        k = self._check_latents(latents)
        latents = latents.to(self.device, torch.float32)
        d = self.codebook_dim
        codes = [self.model.quantizer.quantizers[i].decode_latents(latents[:, i * d : (i + 1) * d])[1] for i in range(k)]
        return torch.stack(codes, dim=1)

    @torch.inference_mode()
    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised embedding ``Z̃ = Σ_i out_proj_i(codebook_i[codes_i])``: ``[B, k, L]`` → ``[B, H, L]``."""
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.n_codebooks:
            raise ValueError(f"codes must be [B, k<={self.n_codebooks}, L] int64, got {tuple(codes.shape)}")
        return self.model.quantizer.from_codes(codes.to(self.device).long())[0]

    # --- decode -------------------------------------------------------------------------------

    def decode_latents(self, latents: torch.Tensor, length: int | None = None, **chunking) -> torch.Tensor:
        """Snap, embed and decode latents ``[B, k·d, L]`` → audio ``[B, 1, length or L·hop]``, chunk by chunk (the
        snap and the embedding are per frame, so nothing whole-length but the audio is ever held)."""
        check_chunking(chunking.get("chunk_seconds"), chunking.get("context_seconds", DEFAULT_CONTEXT_SECONDS))
        self._check_latents(latents)
        return self._decode(lambda start, stop: self.snap(latents[..., start:stop]), latents.shape[-1], length,
                            **chunking)

    def decode_codes(
        self,
        codes: torch.Tensor,
        length: int | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
        progress: bool = True,
    ) -> torch.Tensor:
        """Codes ``[B, k, L]`` → audio ``[B, 1, length or L·hop]``; chunked over frames for long inputs."""
        return self._decode(lambda start, stop: codes[..., start:stop], codes.shape[-1], length, chunk_seconds,
                            context_seconds, progress)

    @torch.inference_mode()
    def _decode(self, chunk_codes: Callable[[int, int], torch.Tensor], frames: int, length: int | None,
                chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS, context_seconds: float = DEFAULT_CONTEXT_SECONDS,
                progress: bool = True) -> torch.Tensor:
        """Decode ``frames`` frames whose codes ``chunk_codes(start, stop)`` gives ``[B, k, stop − start]``, in chunks."""
        check_chunking(chunk_seconds, context_seconds)

        def decode_window(start: int, stop: int) -> torch.Tensor:
            audio = self.model.decoder(self.embed_codes(chunk_codes(start, stop)))
            return audio.reshape(audio.shape[0], 1, -1)

        audio = self._chunked(decode_window, frames, chunk_seconds, context_seconds, progress, "decode",
                              samples_per_frame=self.hop_length)
        return audio if length is None else audio[..., :length]

    # --- helpers ------------------------------------------------------------------------------

    def _chunked(
        self,
        run: Callable[[int, int], torch.Tensor],
        frames: int,
        chunk_seconds: float | None,
        context_seconds: float,
        progress: bool,
        label: str,
        samples_per_frame: int = 1,
    ) -> torch.Tensor:
        """Apply ``run(start, stop)`` (frame indices → ``[B, C, (stop-start)·samples_per_frame]``) over
        chunks of ``chunk_seconds`` with ``context_seconds`` of discarded overlap on each side."""
        check_chunking(chunk_seconds, context_seconds)
        chunk = frames if chunk_seconds is None else max(1, round(chunk_seconds * self.frame_rate))
        context = round(context_seconds * self.frame_rate)
        starts = range(0, frames, chunk)
        result = None
        for start in tqdm(starts, desc=f"DAC {label}", unit="chunk", disable=not progress or len(starts) == 1):
            stop = min(start + chunk, frames)
            lo, hi = max(0, start - context), min(frames, stop + context)
            piece = run(lo, hi)[..., (start - lo) * samples_per_frame : (stop - lo) * samples_per_frame]
            if result is None:  # allocated once: no list of pieces and no concatenated copy
                result = piece.new_empty(*piece.shape[:-1], frames * samples_per_frame, device="cpu")
            result[..., start * samples_per_frame : stop * samples_per_frame] = piece
        return result

    def _check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(
                f"audio must be [batch, 1, samples] mono at {self.sample_rate} Hz, got {tuple(audio.shape)}; "
                "mix down with discodiff.audio.to_mono and add a batch dimension"
            )
        if audio.shape[-1] == 0:
            raise ValueError("audio has zero samples")
        return audio.float()

    def _check_latents(self, latents: torch.Tensor) -> int:
        d = self.codebook_dim
        if latents.ndim != 3 or latents.shape[1] % d or not 1 <= latents.shape[1] // d <= self.n_codebooks:
            raise ValueError(
                f"latents must be [B, k*{d}, L] with 1 <= k <= {self.n_codebooks}, got {tuple(latents.shape)}"
            )
        return latents.shape[1] // d

    def extra_repr(self) -> str:
        s = self.spec
        return (f"backend={self.backend}, source={self.source}, sample_rate={s.sample_rate}, hop={s.hop_length}, "
                f"codebooks={s.n_codebooks}x{s.codebook_size}x{s.codebook_dim}")
