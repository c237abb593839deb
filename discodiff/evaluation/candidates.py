"""Several accompaniments for one vocal, generated in one batch and ranked by how well they fit it.

:func:`generate_candidates` calls any family's pipeline once with the prompt repeated ``num_candidates`` times
(candidate ``i`` draws from ``torch.Generator().manual_seed(seed + i)``, so candidate ``i`` is the same whatever
``num_candidates`` is) and scores every candidate:

- with a vocal, its vocal fit (:func:`~.vocal_fit.vocal_fit`) and the one number it is ranked by,
  :func:`fit_score`: the mean of the consonance above chance, scaled to 1 at full consonance, and the rhythmic
  agreement (both 0 for an accompaniment unrelated to the vocal, 1 at best). Consonance rather than the vocal's own
  pitch class because four-part writing leaves the melody's pitch class out of the lower voices (see
  :mod:`.vocal_fit`);
- with a CLAP embedder (:class:`~.embedders.ClapEmbedder`), its CLAP score against the prompt (cosine, −1…1).

The ranking score is the fit score, plus the CLAP score when both exist; the CLAP score alone without a vocal.
Without either the candidates keep their generation order and :attr:`RankedCandidates.ranked_by` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..errors import GenerationError, is_integer
from .vocal_fit import (CHANCE_CONSONANCE, VocalFit, accompaniment_features, fit_from_features, vocal_features,
                        voiced_frames)

MAX_CANDIDATES = 16


@dataclass(frozen=True)
class Candidate:
    """One generated accompaniment ``audio [1, T]`` (float32, CPU) from ``seed``, with its scores (None when not
    measured) and ``rank`` (1 = best)."""

    rank: int
    seed: int
    audio: torch.Tensor
    fit: VocalFit | None
    clap_score: float | None
    score: float | None


@dataclass(frozen=True)
class RankedCandidates:
    """The candidates, best first, at ``sample_rate``; ``ranked_by`` names the score they are sorted by."""

    candidates: list[Candidate]
    sample_rate: int
    ranked_by: str

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


def fit_score(fit: VocalFit) -> float:
    """One number for how well an accompaniment fits its vocal: ``(consonance above chance / its range + rhythmic) / 2``;
    about 0 for an unrelated accompaniment, 1 at best."""
    consonance = (fit.consonance - CHANCE_CONSONANCE) / (1 - CHANCE_CONSONANCE)
    return (consonance + fit.rhythmic) / 2


def check_num_candidates(num_candidates) -> int:
    if not is_integer(num_candidates) or not 1 <= num_candidates <= MAX_CANDIDATES:
        raise GenerationError(f"num_candidates={num_candidates!r}: must be a whole number in 1 … {MAX_CANDIDATES}")
    return int(num_candidates)


@torch.no_grad()
def generate_candidates(pipeline, prompt: str, vocal: str | Path | torch.Tensor | None = None,
                        duration: float | None = None, num_candidates: int = 4, seed: int = 0, progress: bool = True,
                        clap=None, **options) -> RankedCandidates:
    """``num_candidates`` accompaniments of ``prompt`` (for ``vocal``: a file or mono audio at the pipeline's rate,
    ``[T]`` / ``[1, T]``) from one batched call of ``pipeline`` (any family; ``options`` are its sample options, e.g.
    ``num_inference_steps``), ranked best first. ``clap``: a :class:`~.embedders.ClapEmbedder` for the CLAP score."""
    count = check_num_candidates(num_candidates)
    if not is_integer(seed) or seed < 0:
        raise GenerationError(f"seed={seed!r}: must be a whole number ≥ 0")
    if not isinstance(prompt, str):
        raise GenerationError(f"prompt must be one string (the candidates share it), got {type(prompt).__name__}")
    rate = pipeline.sample_rate
    if isinstance(vocal, (str, Path)):
        vocal = load_audio(vocal, sample_rate=rate, mono=True)
    if vocal is not None:
        vocal = torch.as_tensor(vocal, dtype=torch.float32).reshape(1, -1)
    analysed = None if vocal is None else vocal_features(vocal[0].numpy(), rate)
    if analysed is not None:
        voiced_frames(analysed.pitch_class, "the vocal")  # a take that cannot be scored fails before the work
    generators = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    output = pipeline([prompt] * count, vocal=vocal, duration=duration, generator=generators, progress=progress, **options)
    audios = torch.as_tensor(output.audios).detach().to("cpu", torch.float32)

    fits: list[VocalFit | None] = [None] * count
    if analysed is not None:
        fits = [fit_from_features(analysed, accompaniment_features(audio[0].numpy(), rate, f"candidate {i}"))
                for i, audio in enumerate(audios)]
    claps: list[float | None] = [None] * count
    if clap is not None:
        from .embedders import clap_score

        audio_embeddings = np.stack([clap(audio, rate) for audio in audios])
        claps = [float(s) for s in clap_score(audio_embeddings, np.repeat(clap.text_embeddings(prompt), count, axis=0))]

    parts = (["vocal fit"] if vocal is not None else []) + (["CLAP score"] if clap is not None else [])
    scores = [None if not parts else (0.0 if fit is None else fit_score(fit)) + (0.0 if c is None else c)
              for fit, c in zip(fits, claps)]
    order = sorted(range(count), key=lambda i: -scores[i]) if parts else list(range(count))
    candidates = [Candidate(rank=rank, seed=seed + i, audio=audios[i], fit=fits[i], clap_score=claps[i], score=scores[i])
                  for rank, i in enumerate(order, start=1)]
    ranked_by = " + ".join(parts) if parts else "nothing (no vocal and no CLAP model): generation order"
    return RankedCandidates(candidates, rate, ranked_by)
