"""The DAC latent query split into primary / secondary parts, and its normalisation statistics.

Latents are ``[B, K·d, L]`` with codebook ``i`` in channels ``d·i : d·(i+1)``. The primary part is
codebooks ``0 … P−1`` (``P·d`` channels, content; P = 1 in the paper); the secondary part is codebooks
``P … K−1`` (detail).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError, DiscoDiffError

NORMALIZE_PER = ("codebook", "channel")


def split_latents(latents: torch.Tensor, primary_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, K·d, L]`` → ``(primary [B, P·d, L], secondary [B, (K−P)·d, L])`` with ``primary_channels = P·d``."""
    if latents.ndim != 3 or latents.shape[1] <= primary_channels:
        raise ValueError(f"latents must be [B, C, L] with more than the {primary_channels} primary channels, "
                         f"got {tuple(latents.shape)}")
    return latents[:, :primary_channels], latents[:, primary_channels:]


def merge_latents(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_latents`: concatenate along channels."""
    if primary.shape[0] != secondary.shape[0] or primary.shape[-1] != secondary.shape[-1]:
        raise ValueError(f"primary {tuple(primary.shape)} and secondary {tuple(secondary.shape)} disagree in batch or length")
    return torch.cat([primary, secondary], dim=1)


@dataclass
class LatentStats:
    """Mean / std of latents per codebook (``[K]``) or per channel (``[K·d]``), fitted on data.

    ``normalize`` maps latents to zero mean / unit std; ``denormalize`` inverts it (do that before
    snapping). Works on any leading channel slice: pass ``channel_offset`` for secondary-only tensors.
    ``fitted`` is False only for the placeholder of an untrained model (:meth:`identity`).
    """

    mean: torch.Tensor
    std: torch.Tensor
    codebook_dim: int
    per: str = "codebook"
    fitted: bool = True

    def __post_init__(self) -> None:
        if self.per not in NORMALIZE_PER:
            raise ValueError(f"per must be one of {NORMALIZE_PER}, got '{self.per}'")
        self.mean = torch.as_tensor(self.mean, dtype=torch.float64)
        self.std = torch.as_tensor(self.std, dtype=torch.float64)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {tuple(self.mean.shape)} and std {tuple(self.std.shape)} must be equal 1-D shapes")
        if (self.std <= 0).any():
            raise ValueError("std has non-positive entries; fit the statistics on non-constant latents")

    @classmethod
    def identity(cls, n_codebooks: int, codebook_dim: int, per: str = "codebook") -> "LatentStats":
        """Mean 0 / std 1, marked unfitted: the placeholder of a freshly initialised model."""
        size = n_codebooks if per == "codebook" else n_codebooks * codebook_dim
        return cls(torch.zeros(size), torch.ones(size), codebook_dim, per, fitted=False)

    @property
    def channels(self) -> int:
        return self.mean.numel() * (self.codebook_dim if self.per == "codebook" else 1)

    @classmethod
    def fit(cls, batches: Iterable[torch.Tensor], codebook_dim: int, per: str = "codebook") -> "LatentStats":
        """Stream over ``[B, K·d, L]`` batches (or ``[K·d, L]`` items) accumulating float64 sums."""
        total = total_sq = None
        count = 0
        for x in batches:
            x = x.detach().to(torch.float64)
            x = x.unsqueeze(0) if x.ndim == 2 else x
            groups = x.reshape(x.shape[0], -1, codebook_dim, x.shape[-1]) if per == "codebook" else x.unsqueeze(2)
            s, sq = groups.sum(dim=(0, 2, 3)), groups.square().sum(dim=(0, 2, 3))
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
            count += groups.shape[0] * groups.shape[2] * groups.shape[3]
        if total is None:
            raise ValueError("LatentStats.fit got no batches")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-8)
        return cls(mean, std, codebook_dim, per)

    def _expand(self, v: torch.Tensor, channels: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        per_channel = v.repeat_interleave(self.codebook_dim) if self.per == "codebook" else v
        if offset + channels > per_channel.numel():
            raise ValueError(f"channels {offset}:{offset + channels} exceed the {per_channel.numel()} fitted channels")
        return per_channel[offset : offset + channels].to(like.device, like.dtype)[:, None]

    def normalize(self, latents: torch.Tensor, channel_offset: int = 0) -> torch.Tensor:
        """``(x − mean) / std`` on ``[..., C, L]`` covering fitted channels ``offset : offset + C``."""
        c = latents.shape[-2]
        return (latents - self._expand(self.mean, c, channel_offset, latents)) / self._expand(self.std, c, channel_offset, latents)

    def denormalize(self, latents: torch.Tensor, channel_offset: int = 0) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        c = latents.shape[-2]
        return latents * self._expand(self.std, c, channel_offset, latents) + self._expand(self.mean, c, channel_offset, latents)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "codebook_dim": self.codebook_dim, "per": self.per,
                "fitted": self.fitted}

    @classmethod
    def from_dict(cls, data: dict) -> "LatentStats":
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming the first missing or malformed entry."""
        problem = _check_stats_dict(data)
        if problem:
            raise ValueError(problem)
        mean, std = (torch.tensor(data[k], dtype=torch.float64) for k in ("mean", "std"))
        return cls(mean, std, int(data["codebook_dim"]), data["per"], bool(data.get("fitted", True)))

    def save(self, path: str | Path) -> Path:
        """Write JSON (float64 values round-trip exactly)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, error: type[DiscoDiffError] = DataError,
             fix: str = "fit the statistics again (prepare the data again) or copy the file again") -> "LatentStats":
        """Read a :meth:`save` file; any problem (missing, unreadable, not JSON, missing or malformed entries)
        raises one ``error`` naming ``path`` and ending in ``fix``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise error(f"{path}: missing; {fix}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise error(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); {fix}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {fix}") from err
        try:
            return cls.from_dict(data)
        except ValueError as err:  # from_dict's checks and __post_init__'s (shapes, non-positive std)
            raise error(f"{path}: {err}; {fix}") from err


def _check_stats_dict(data) -> str | None:
    """What is wrong with a :meth:`LatentStats.to_dict` dictionary, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object with mean, std, codebook_dim and per, got {type(data).__name__}"
    missing = [key for key in ("mean", "std", "codebook_dim", "per") if key not in data]
    if missing:
        return f"missing {', '.join(missing)}"
    for key in ("mean", "std"):
        values = data[key]
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            return f"{key} must be a non-empty list of finite numbers"
    if not isinstance(data["codebook_dim"], int) or isinstance(data["codebook_dim"], bool) or data["codebook_dim"] < 1:
        return f"codebook_dim must be a positive integer, got {data['codebook_dim']!r}"
    if data["per"] not in NORMALIZE_PER:
        return f"per must be one of {NORMALIZE_PER}, got {data['per']!r}"
    if not isinstance(data.get("fitted", True), bool):
        return f"fitted must be true or false, got {data['fitted']!r}"
    return None


def check_latent_stats(stats: LatentStats, normalize_per: str, codebook_dim: int, source: str | Path | None = None) -> None:
    """Refuse latent statistics (``stats``, read from ``source`` when given, e.g. a cache's ``latent_stats.json``)
    that were not fitted per ``normalize_per`` (the model config's) over codebooks of ``codebook_dim`` channels
    (the model's codec): a :class:`DataError` naming both values and the fix."""
    where = str(source) if source is not None else "the latent statistics"
    if stats.per != normalize_per:
        raise DataError(f"{where}: fitted per {stats.per}, but the model config has normalize_per={normalize_per}; "
                        f"re-run `discodiff prepare --normalize-per {normalize_per}` on the data, or set "
                        f"normalize_per={stats.per} in the model config")
    if stats.codebook_dim != codebook_dim:
        raise DataError(f"{where}: fitted on codebooks of {stats.codebook_dim} channels, but the model's codec has "
                        f"{codebook_dim}; re-run `discodiff prepare --codec <the model codec>` on the data")
