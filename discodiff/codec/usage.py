"""How well a codec uses its codebooks: per-codebook perplexity and share of entries used, streamed over batches.

A collapsed codebook (every frame snapped to one entry) still lets a reconstruction loss fall, so codebook
usage is logged from the first training steps and reported for a trained codec. Perplexity is
``exp(entropy)`` of the code histogram: the number of equally used entries that would give the same entropy
(1 for a collapsed codebook, the codebook size for a perfectly uniform one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CODE_PADDING = -1  # codes of padding frames (the latent cache pads with it too)


@dataclass
class CodebookUsage:
    """Running code histograms ``counts [K, N]`` (K codebooks of N entries)."""

    counts: torch.Tensor

    @classmethod
    def empty(cls, n_codebooks: int, codebook_size: int) -> CodebookUsage:
        return cls(torch.zeros(n_codebooks, codebook_size, dtype=torch.long))

    def update(self, codes: torch.Tensor) -> CodebookUsage:
        """Count ``codes [B, K, L]`` (int; :data:`CODE_PADDING` frames are skipped)."""
        n_codebooks, size = self.counts.shape
        if codes.ndim != 3 or codes.shape[1] != n_codebooks:
            raise ValueError(f"codes must be [B, {n_codebooks}, L], got {tuple(codes.shape)}")
        flat = codes.detach().to("cpu", torch.long).transpose(0, 1).reshape(n_codebooks, -1)
        valid = flat != CODE_PADDING
        if ((flat < 0) & valid).any() or (flat >= size).any():
            raise ValueError(f"codes must lie in [0, {size}) (or be {CODE_PADDING} for padding)")
        offsets = torch.arange(n_codebooks)[:, None] * size
        self.counts += torch.bincount((flat + offsets)[valid], minlength=n_codebooks * size).view(n_codebooks, size)
        return self

    @property
    def perplexity(self) -> torch.Tensor:
        """``[K]``: exp of the entropy of each codebook's histogram (0 before any code was counted)."""
        totals = self.counts.sum(dim=1, keepdim=True)
        p = self.counts / totals.clamp_min(1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1)
        return torch.where(totals[:, 0] > 0, entropy.exp(), torch.zeros_like(entropy))

    @property
    def used_share(self) -> torch.Tensor:
        """``[K]``: share of each codebook's entries that were used at least once."""
        return (self.counts > 0).float().mean(dim=1)

    def metrics(self, prefix: str = "codebook") -> dict[str, float]:
        """``{prefix}/perplexity_<k>``, ``{prefix}/used_<k>`` per codebook and their minimum over codebooks."""
        perplexity, used = self.perplexity, self.used_share
        metrics = {f"{prefix}/perplexity_{k}": float(v) for k, v in enumerate(perplexity)}
        metrics.update({f"{prefix}/used_{k}": float(v) for k, v in enumerate(used)})
        metrics[f"{prefix}/perplexity_min"] = float(perplexity.min())
        metrics[f"{prefix}/used_min"] = float(used.min())
        return metrics
