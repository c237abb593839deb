"""Distances between two sets of embeddings (one embedding per clip): Fréchet (FAD, FAD∞) and kernel (KAD-style).

- :func:`frechet_distance` — the Fréchet distance of two Gaussians ``N(μa, Σa)``, ``N(μb, Σb)``:
  ``‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½``, in float64 from symmetric eigen-decompositions
  (``numpy.linalg.eigh``) and singular values, never ``scipy.linalg.sqrtm`` (whose results changed across scipy
  releases, complex parts included, and whose ``disp`` argument scipy 1.18 removed): never negative, never complex,
  finite on rank-deficient covariances.
- :class:`GaussianStats` — the mean and covariance of a set of embeddings, saved as ``.npz`` with JSON metadata;
  :func:`cached_stats` keeps them on disk under a hash of how the embeddings were made.
- :func:`fad` — the Fréchet distance of two embedding sets' Gaussians (Fréchet Audio Distance on audio embeddings).
  It needs more clips than embedding dimensions (``N > D``) for a full-rank covariance; it refuses fewer unless
  ``allow_rank_deficient=True``. The estimate is biased upwards by about ``slope / N``.
- :func:`fad_infinity` — FAD∞ (Chung et al., "Rethinking Fréchet Audio Distance"; fadtk's ``score_inf``): FAD of
  random subsets of clips at several sizes ``n``, the least-squares line ``FAD(n) = FAD∞ + slope / n`` extrapolated
  to ``1/n → 0``, with a bootstrap confidence interval.
- :func:`kernel_distance` — the unbiased estimate of the squared maximum mean discrepancy (MMD², as KID and KAD use),
  with a polynomial or Gaussian (RBF) kernel; no Gaussian assumption, unbiased, usable on small sets (``N ≥ 2``).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from discodiff.errors import ConfigError, DataError, OutputError, is_integer, is_real
from discodiff.outputs import load_array_record, save_array_record

STATS_FORMAT = 1                 # the "format" field of a saved GaussianStats' metadata
STATS_SUFFIX = ".npz"
NOT_PSD_TOLERANCE = 1e-4         # an input covariance eigenvalue below −tol·λmax is refused, not clipped
DEFAULT_COUNT_STEPS = 10         # FAD∞: clip counts evenly spaced from the smallest to N
DEFAULT_MIN_FRACTION = 0.25      # FAD∞: the smallest count is at least this share of N (and more than D)
DEFAULT_BOOTSTRAP = 200
CONFIDENCE = 0.95


# --- the Fréchet distance of two Gaussians ----------------------------------------------------------------------


def _mean_and_cov(mu, cov, mu_name: str, cov_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``mu [D]`` and ``cov [D, D]`` as finite float64 arrays, ``cov`` symmetrised; errors name the argument."""
    mu = np.asarray(mu, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise DataError(f"{mu_name} must be a mean vector [D] with D ≥ 1, got shape {tuple(mu.shape)}")
    if cov.shape != (mu.shape[0], mu.shape[0]):
        raise DataError(f"{cov_name} must be a covariance [D, D] matching {mu_name} (D = {mu.shape[0]}), "
                        f"got shape {tuple(cov.shape)}")
    for name, value in ((mu_name, mu), (cov_name, cov)):
        if not np.isfinite(value).all():
            raise DataError(f"{name} holds NaN or infinite values; recompute the statistics from finite embeddings")
    return mu, (cov + cov.T) / 2


def _psd_eigen(matrix: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition ``(λ [D], V [D, D])`` of a symmetric PSD matrix, with round-off eigenvalues set to 0.

    Eigenvalues below ``D·ε·λmax`` (ε: float64 machine epsilon), negative ones included, are below what ``eigh`` can
    resolve and count as 0, so their square roots add no spurious trace. With a ``name``, a matrix with an
    eigenvalue below ``−NOT_PSD_TOLERANCE·λmax`` is refused as not a covariance.
    """
    values, vectors = np.linalg.eigh(matrix)
    largest = max(float(values[-1]), 0.0)
    if name is not None and (values[-1] < 0 or values[0] < -NOT_PSD_TOLERANCE * largest):
        raise DataError(f"{name} is not a covariance (eigenvalues from {values[0]:.3g} to {values[-1]:.3g}, "
                        "a covariance has none below 0); pass the covariance of the embeddings")
    floor = matrix.shape[0] * np.finfo(np.float64).eps * largest
    return np.where(values > floor, values, 0.0), vectors


class _FrechetReference:
    """One Gaussian ``N(μa, Σa)`` with ``Σa^½`` computed once, to measure many others against it.

    ``tr (Σa^½ Σb Σa^½)^½`` is the sum of the singular values of ``Σa^½ Σb^½`` (its Gram matrix
    ``(Σa^½ Σb^½)(Σa^½ Σb^½)ᵀ`` is ``Σa^½ Σb Σa^½``), so each distance costs one ``eigh`` (for ``Σb^½``) and one SVD.
    Singular values keep the absolute precision of small ones, where the eigenvalues of ``Σa^½ Σb Σa^½`` would
    square the condition number and lose those below ``√ε``.
    """

    def __init__(self, mu: np.ndarray, cov: np.ndarray, cov_name: str = "cov_a"):
        values, vectors = _psd_eigen(cov, cov_name)
        self.mu = mu
        self.trace = float(values.sum())
        self.sqrt_cov = (vectors * np.sqrt(values)) @ vectors.T

    def distance(self, mu: np.ndarray, cov: np.ndarray, cov_name: str | None = None) -> float:
        """``‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½`` for ``N(μb = mu, Σb = cov)``, clamped at 0.

        With a ``cov_name``, a ``cov`` that is not a covariance is refused (see :func:`_psd_eigen`).
        """
        values, vectors = _psd_eigen(cov, cov_name)
        # Σa^½ Σb^½ = Σa^½ V diag(√λ) Vᵀ has the singular values of Σa^½ V diag(√λ) (Vᵀ is orthogonal)
        singular = np.linalg.svd((self.sqrt_cov @ vectors) * np.sqrt(values), compute_uv=False)
        difference = self.mu - mu
        value = float(difference @ difference) + self.trace + float(values.sum()) - 2 * float(singular.sum())
        return max(value, 0.0)  # a negative value is round-off (the exact distance is ≥ 0)


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """The Fréchet (2-Wasserstein²) distance of ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``.

    ``‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½`` in float64: the square roots ``Σ^½ = V diag(√λ) Vᵀ``
    from ``numpy.linalg.eigh`` of the symmetrised covariances (eigenvalues below round-off level, negative ones
    included, clipped to 0), the trace term as the sum of the singular values of ``Σa^½ Σb^½``. Never negative,
    never complex, finite for rank-deficient covariances; symmetric in ``a`` and ``b`` up to round-off.

    Args:
        mu_a, mu_b: means ``[D]``.
        cov_a, cov_b: covariances ``[D, D]`` (symmetric positive semi-definite).

    Raises:
        DataError: a wrong shape, a different ``D``, NaN or infinite values, or a matrix with clearly negative
            eigenvalues; the message names the argument.
    """
    mu_a, cov_a = _mean_and_cov(mu_a, cov_a, "mu_a", "cov_a")
    mu_b, cov_b = _mean_and_cov(mu_b, cov_b, "mu_b", "cov_b")
    if mu_a.shape != mu_b.shape:
        raise DataError(f"mu_a/cov_a have D = {mu_a.shape[0]} dimensions, mu_b/cov_b D = {mu_b.shape[0]}; "
                        "compare statistics of the same embedder")
    return _FrechetReference(mu_a, cov_a, "cov_a").distance(mu_b, cov_b, "cov_b")


# --- Gaussian statistics of a set of embeddings ------------------------------------------------------------------


def _embeddings(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 matrix ``[N, D]`` with ``N ≥ 2`` (a covariance needs two clips)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataError(f"{name} must be an embedding matrix [N clips, D dimensions], got shape {tuple(x.shape)}; "
                        "pool frame embeddings to one embedding per clip first")
    if x.shape[0] < 2:
        raise DataError(f"{name} has {x.shape[0]} clip(s); a covariance needs at least 2")
    if not np.isfinite(x).all():
        raise DataError(f"{name} holds NaN or infinite values; check the embedder's output")
    return x


def _covariance(x: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` of the rows of ``x [N, D]`` (float64; ``ddof=1``: unbiased)."""
    mu = x.mean(axis=0)
    centred = x - mu
    cov = centred.T @ centred / (x.shape[0] - ddof)
    return mu, (cov + cov.T) / 2


@dataclass(frozen=True, eq=False)
class GaussianStats:
    """Mean and covariance of ``n`` embeddings (one per clip), with how they were made.

    Attributes:
        mu: mean ``[D]`` (float64).
        cov: unbiased covariance ``[D, D]`` (float64, ``ddof=1``).
        n: number of clips.
        description: JSON-able record of how the embeddings were made (embedder, settings, data fingerprint).
    """

    mu: np.ndarray
    cov: np.ndarray
    n: int
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        mu, cov = _mean_and_cov(self.mu, self.cov, "GaussianStats.mu", "GaussianStats.cov")
        if not is_integer(self.n) or self.n < 2:
            raise DataError(f"GaussianStats.n must be the number of clips (an integer ≥ 2), got {self.n!r}")
        if not isinstance(self.description, dict):
            raise DataError(f"GaussianStats.description must be a dict, got {type(self.description).__name__}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "n", int(self.n))

    @property
    def dim(self) -> int:
        """The embedding size ``D``."""
        return int(self.mu.shape[0])

    @classmethod
    def from_embeddings(cls, x, description: dict | None = None) -> GaussianStats:
        """The statistics of embeddings ``x [N, D]`` (``N ≥ 2``), computed in float64."""
        x = _embeddings(x, "embeddings")
        mu, cov = _covariance(x)
        return cls(mu, cov, x.shape[0], dict(description or {}))

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz``: arrays ``mu``, ``cov`` and a JSON ``metadata`` string), atomically."""
        path = Path(path)
        if path.suffix.lower() != STATS_SUFFIX:
            raise OutputError(f"statistics file {path} must end in {STATS_SUFFIX} "
                              f"(e.g. {path.with_suffix(STATS_SUFFIX).name})")
        metadata = {"format": STATS_FORMAT, "n": self.n, "description": self.description}
        try:
            text = json.dumps(metadata, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"GaussianStats.description must be JSON-able to be saved ({err})") from err
        return save_array_record(path, {"mu": self.mu, "cov": self.cov}, text)

    @classmethod
    def load(cls, path: str | Path) -> GaussianStats:
        """Read a file written by :meth:`save`; a missing, damaged or foreign file raises :class:`DataError`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"statistics file {path} does not exist; "
                            "compute it with GaussianStats.from_embeddings(...).save()")
        try:
            arrays, metadata = load_array_record(path)
            if metadata is None or metadata.get("format") != STATS_FORMAT:
                raise ValueError(f"format {(metadata or {}).get('format')!r}, expected {STATS_FORMAT}")
            return cls(arrays["mu"], arrays["cov"], metadata["n"], metadata["description"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"statistics file {path} is damaged or not a GaussianStats file ({err}); "
                            "delete it and compute it again") from err


def _canonical_key(key) -> str:
    """``key`` as canonical JSON (sorted keys, no spaces): the same key always gives the same text."""
    if not isinstance(key, dict):
        raise ConfigError(f"a statistics cache key must be a dict (embedder, settings, data fingerprint), got "
                          f"{type(key).__name__}")
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"a statistics cache key must be JSON-able (strings, numbers, lists, dicts): {err}") from err


def stats_cache_path(cache_dir: str | Path, key: dict) -> Path:
    """The file :func:`cached_stats` keeps ``key``'s statistics in: ``stats-<sha256 of canonical key JSON>.npz``."""
    digest = hashlib.sha256(_canonical_key(key).encode("utf-8")).hexdigest()
    return Path(cache_dir) / f"stats-{digest[:32]}{STATS_SUFFIX}"


def cached_stats(cache_dir: str | Path, key: dict, compute: Callable[[], np.ndarray]) -> GaussianStats:
    """The statistics of the embeddings ``compute()`` returns (``[N, D]``), kept in ``cache_dir`` under ``key``.

    ``key`` is any JSON-able dict naming how the embeddings are made (embedder name, its settings, a fingerprint of
    the data); it is stored as the statistics' ``description``. A cached file is reused only when its stored key
    equals ``key``; a file with another key, or a damaged one, is recomputed and replaced (with a warning).
    """
    canonical = _canonical_key(key)
    path = stats_cache_path(cache_dir, key)
    if path.exists():
        try:
            stats = GaussianStats.load(path)
        except DataError as err:
            warnings.warn(f"{err}; recomputing it", stacklevel=2)
        else:
            if _canonical_key(stats.description) == canonical:
                return stats
            warnings.warn(f"statistics file {path} was made for another key ({_canonical_key(stats.description)[:200]}); "
                          "recomputing it", stacklevel=2)
    stats = GaussianStats.from_embeddings(compute(), description=json.loads(canonical))
    stats.save(path)
    return stats


# --- FAD -------------------------------------------------------------------------------------------------------


def _check_rank(n: int, dim: int, name: str, allow_rank_deficient: bool) -> None:
    """Refuse ``n ≤ dim`` clips (a rank-deficient covariance) unless ``allow_rank_deficient``."""
    if n <= dim and not allow_rank_deficient:
        raise DataError(f"{name} has {n} clips of {dim}-dimensional embeddings: a full-rank covariance needs more clips "
                        f"than dimensions (at least {dim + 1}); with {n} the FAD estimate is strongly biased. Use more "
                        "clips, kernel_distance (KAD, suited to small sets), or pass allow_rank_deficient=True")


def _as_stats(x, name: str, allow_rank_deficient: bool) -> GaussianStats:
    """Embeddings ``[N, D]`` or :class:`GaussianStats` as statistics, refusing ``N ≤ D`` (see :func:`_check_rank`)."""
    stats = x if isinstance(x, GaussianStats) else GaussianStats.from_embeddings(_embeddings(x, name))
    _check_rank(stats.n, stats.dim, name, allow_rank_deficient)
    return stats


def fad(embeddings_a, embeddings_b, *, allow_rank_deficient: bool = False) -> float:
    """Fréchet Audio Distance: :func:`frechet_distance` of the Gaussians fitted to two embedding sets.

    Args:
        embeddings_a, embeddings_b: ``[N, D]`` (one embedding per clip, same ``D``) or :class:`GaussianStats`.
        allow_rank_deficient: accept ``N ≤ D`` clips (a singular covariance; the value stays finite but is strongly
            biased, so compare it only with values from the same ``N``).

    Raises:
        DataError: fewer than 2 clips, or ``N ≤ D`` without ``allow_rank_deficient`` (the message gives N and D).
    """
    a = _as_stats(embeddings_a, "embeddings_a", allow_rank_deficient)
    b = _as_stats(embeddings_b, "embeddings_b", allow_rank_deficient)
    if a.dim != b.dim:
        raise DataError(f"embeddings_a has {a.dim}-dimensional embeddings, embeddings_b {b.dim}-dimensional; "
                        "compare embeddings of the same embedder")
    return frechet_distance(a.mu, a.cov, b.mu, b.cov)


# --- FAD∞ ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FadInfinity:
    """FAD extrapolated to infinitely many evaluation clips, with the fit it came from.

    Attributes:
        value: FAD∞, the intercept of ``FAD(n) = FAD∞ + slope / n`` (an extrapolation: it can be slightly below 0
            when the sets match).
        slope: the fitted ``slope`` (the finite-sample bias is about ``slope / n``).
        ci_low, ci_high: the bootstrap confidence interval of ``value`` (NaN when ``num_bootstrap`` is 0).
        counts: the subset sizes ``n`` ``[K]``.
        fads: FAD of one random subset of each size ``[K]``.
    """

    value: float
    slope: float
    ci_low: float
    ci_high: float
    counts: np.ndarray
    fads: np.ndarray


def fit_inverse_count(counts, values) -> tuple[float, float]:
    """Least-squares fit of ``values ≈ intercept + slope / counts``: ``(intercept, slope)``.

    Args:
        counts: subset sizes ``[K]``, at least two distinct, all positive.
        values: the measure at each size ``[K]``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if counts.ndim != 1 or counts.shape != values.shape or len(np.unique(counts)) < 2 or (counts <= 0).any():
        raise DataError(f"fit_inverse_count needs matching 1-D counts and values with at least two distinct positive "
                        f"counts, got counts {counts.tolist()} and {values.size} values")
    design = np.stack([np.ones_like(counts), 1.0 / counts], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, values, rcond=None)
    return float(intercept), float(slope)


def _clip_counts(clip_counts, n: int, dim: int, allow_rank_deficient: bool) -> np.ndarray:
    """The subset sizes for FAD∞: ``clip_counts`` checked, or :data:`DEFAULT_COUNT_STEPS` evenly spaced sizes from
    ``max(D + 1, N·DEFAULT_MIN_FRACTION)`` (``max(2, …)`` with ``allow_rank_deficient``) to ``N``."""
    smallest = max(2 if allow_rank_deficient else dim + 1, math.ceil(n * DEFAULT_MIN_FRACTION))
    if clip_counts is None:
        if smallest >= n:
            raise DataError(f"embeddings_eval has {n} clips of {dim}-dimensional embeddings: FAD∞ needs subsets of at "
                            f"least two sizes above {dim} clips, so more than {dim + 1} clips (better several times D); "
                            "use more clips, kernel_distance (KAD), or pass allow_rank_deficient=True")
        return np.unique(np.round(np.linspace(smallest, n, DEFAULT_COUNT_STEPS)).astype(np.int64))
    if isinstance(clip_counts, (str, bytes)) or not isinstance(clip_counts, (Sequence, np.ndarray)) \
            or not all(is_integer(c) for c in clip_counts):
        raise ConfigError(f"clip_counts must be a list of integers (subset sizes), got {clip_counts!r}")
    counts = np.unique(np.asarray(clip_counts, dtype=np.int64))
    if len(counts) < 2 or counts[0] < 2 or counts[-1] > n:
        raise ConfigError(f"clip_counts {counts.tolist()} must hold at least two distinct sizes from 2 to the "
                          f"{n} clips of embeddings_eval")
    _check_rank(int(counts[0]), dim, f"the smallest subset (clip_counts {counts.tolist()})", allow_rank_deficient)
    return counts


def _subset_fads(x: np.ndarray, reference: _FrechetReference, counts: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """FAD against ``reference`` of one random subset (without replacement) of the rows of ``x`` per size."""
    fads = np.empty(len(counts))
    for i, count in enumerate(counts):
        rows = x if count == len(x) else x[rng.choice(len(x), size=int(count), replace=False)]
        fads[i] = reference.distance(*_covariance(rows))
    return fads


def fad_infinity(embeddings_eval, reference_stats_or_embeddings, clip_counts: Sequence[int] | None = None,
                 num_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, *,
                 allow_rank_deficient: bool = False) -> FadInfinity:
    """FAD∞: FAD of the evaluation set extrapolated to infinitely many clips (Chung et al.; fadtk's ``score_inf``).

    FAD is biased upwards by about ``slope / n`` for ``n`` evaluation clips, so it depends on the set's size. For each
    size ``n`` in ``clip_counts`` the FAD of one random subset of ``n`` clips (rows, without replacement) against the
    reference is measured, ``FAD(n) = FAD∞ + slope / n`` is fitted by least squares and its intercept is FAD∞. The
    reference statistics are used whole (their own finite-size bias remains: keep the reference set large).

    The confidence interval is a bootstrap: the evaluation clips are resampled with replacement, the subsets and the
    fit repeated. A resampled set's own limit is the Fréchet distance of the evaluation set's plug-in statistics
    (mean, covariance with ``ddof=0``), not FAD∞, so each replicate's deviation from that limit is added to FAD∞ and
    the interval is the central :data:`CONFIDENCE` (95%) percentile range of these recentred values.
    It costs ``K · (num_bootstrap + 1)`` Fréchet distances (``K`` counts; each one ``eigh`` and one SVD of ``D × D``):
    lower ``num_bootstrap`` for large ``D``.

    Args:
        embeddings_eval: ``[N, D]``, one embedding per clip (pool frames first).
        reference_stats_or_embeddings: :class:`GaussianStats` or embeddings ``[M, D]``.
        clip_counts: subset sizes (default: 10 evenly spaced from ``max(D + 1, N/4)`` to ``N``).
        num_bootstrap: bootstrap replicates for the interval (0: no interval).
        seed: of the ``numpy.random.default_rng`` drawing subsets and resamples; the result is deterministic for it.
        allow_rank_deficient: accept subsets and a reference of ``≤ D`` clips.
    """
    x = _embeddings(embeddings_eval, "embeddings_eval")
    reference = _as_stats(reference_stats_or_embeddings, "reference_stats_or_embeddings", allow_rank_deficient)
    if x.shape[1] != reference.dim:
        raise DataError(f"embeddings_eval has {x.shape[1]}-dimensional embeddings, the reference {reference.dim}-"
                        "dimensional; compare embeddings of the same embedder")
    counts = _clip_counts(clip_counts, len(x), x.shape[1], allow_rank_deficient)
    if not is_integer(num_bootstrap) or num_bootstrap < 0:
        raise ConfigError(f"num_bootstrap must be an integer ≥ 0, got {num_bootstrap!r}")
    if not is_integer(seed):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    ref = _FrechetReference(reference.mu, reference.cov, "reference covariance")
    fads = _subset_fads(x, ref, counts, rng)
    value, slope = fit_inverse_count(counts, fads)
    ci_low = ci_high = math.nan
    if num_bootstrap:
        plug_in = ref.distance(*_covariance(x, ddof=0))
        deviations = np.empty(num_bootstrap)
        for b in range(num_bootstrap):
            resampled = x[rng.integers(0, len(x), size=len(x))]
            deviations[b] = fit_inverse_count(counts, _subset_fads(resampled, ref, counts, rng))[0] - plug_in
        tail = 100 * (1 - CONFIDENCE) / 2
        ci_low, ci_high = (float(v) for v in value + np.percentile(deviations, [tail, 100 - tail]))
    return FadInfinity(value, slope, ci_low, ci_high, counts, fads)


# --- kernel distance (MMD²) ------------------------------------------------------------------------------------


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``‖x_i − y_j‖²`` ``[N, M]`` (float64, clipped at 0 against round-off)."""
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.maximum(squared, 0.0)


def _median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median heuristic: the median distance between distinct points of the pooled set (0 if all points coincide)."""
    pooled = np.concatenate([x, y])
    distances = np.sqrt(_squared_distances(pooled, pooled)[np.triu_indices(len(pooled), k=1)])
    positive = distances[distances > 0]
    return float(np.median(positive)) if positive.size else 0.0


def _unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """``Σ_{i≠j} k(x_i,x_j)/(m(m−1)) + Σ_{i≠j} k(y_i,y_j)/(n(n−1)) − 2 Σ_{i,j} k(x_i,y_j)/(mn)``."""
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_distance(x, y, kernel: str = "poly", degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                    bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy (MMD²) of two embedding sets (KID's estimator; KAD's with ``rbf``).

    Kernels: ``"poly"`` ``k(a, b) = (γ a·b + c)^d`` (``γ = gamma``, default ``1/D``; ``c = coef0``; ``d = degree``),
    KID's; ``"rbf"`` ``k(a, b) = exp(−‖a − b‖² / (2σ²))`` with ``σ = bandwidth``, by default the median distance
    between the points of both sets. The diagonals ``k(x_i, x_i)`` are left out, so the estimate is unbiased (its
    mean over draws is the true MMD², which is 0 for one distribution: single values scatter around 0, negative
    ones included). It makes no Gaussian assumption and works for small sets.

    Args:
        x: ``[M, D]``, ``y``: ``[N, D]``, ``M, N ≥ 2``, same ``D``.

    Returns:
        The estimate (float); symmetric in ``x`` and ``y``.
    """
    x = _embeddings(x, "x")
    y = _embeddings(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x has {x.shape[1]}-dimensional embeddings, y {y.shape[1]}-dimensional; "
                        "compare embeddings of the same embedder")
    if kernel == "poly":
        if not is_integer(degree) or degree < 1:
            raise ConfigError(f"degree must be an integer ≥ 1 for the polynomial kernel, got {degree!r}")
        if gamma is not None and not (is_real(gamma) and gamma > 0 and math.isfinite(gamma)):
            raise ConfigError(f"gamma must be a positive number (or None for 1/D), got {gamma!r}")
        if not (is_real(coef0) and math.isfinite(coef0)):
            raise ConfigError(f"coef0 must be a finite number, got {coef0!r}")
        scale = 1.0 / x.shape[1] if gamma is None else float(gamma)

        def k(a, b):
            return (scale * (a @ b.T) + coef0) ** degree
    elif kernel == "rbf":
        if bandwidth is not None and not (is_real(bandwidth) and bandwidth > 0 and math.isfinite(bandwidth)):
            raise ConfigError(f"bandwidth must be a positive number (or None for the median heuristic), got {bandwidth!r}")
        sigma = _median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
        if sigma == 0.0:
            return 0.0  # every point of both sets is the same point: the distributions are equal

        def k(a, b):
            return np.exp(-_squared_distances(a, b) / (2 * sigma * sigma))
    else:
        raise ConfigError(f"kernel must be 'poly' or 'rbf', got {kernel!r}")
    return _unbiased_mmd2(k(x, x), k(y, y), k(x, y))


def kernel_distance_interval(x: np.ndarray, y: np.ndarray, num_bootstrap: int = 1000, seed: int = 0,
                             confidence: float = 0.95) -> tuple[float, float | None, float | None, float]:
    """``(value, ci_low, ci_high, bandwidth)``: :func:`kernel_distance` with the RBF kernel and median-distance
    bandwidth, and a percentile bootstrap interval — both sets resampled with replacement, the bandwidth kept, and
    the pairs of a clip with a copy of itself left out of the within-set means, as the estimate leaves out the
    diagonal (else every drawn duplicate adds ``k(x, x) = 1`` and biases the replicates up); a replicate that drew a
    single distinct clip for a set has no within-set term and is redrawn. No interval (None) without bootstrap."""
    value = kernel_distance(x, y, kernel="rbf")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sigma = _median_bandwidth(x, y)
    if not num_bootstrap:
        return float(value), None, None, sigma
    if sigma <= 0:
        return float(value), 0.0, 0.0, sigma  # every clip is the same point
    pooled = np.concatenate([x, y])
    kernel = np.exp(-_squared_distances(pooled, pooled) / (2 * sigma * sigma))
    rng = np.random.default_rng(seed)

    def within(index: np.ndarray) -> float:
        distinct = index[:, None] != index[None, :]
        count = distinct.sum()
        return float((kernel[np.ix_(index, index)] * distinct).sum() / count) if count else math.nan

    replicates = np.empty(num_bootstrap)
    for b in range(num_bootstrap):
        replicates[b] = math.nan
        while math.isnan(replicates[b]):
            rows = rng.integers(0, len(x), size=len(x))
            columns = len(x) + rng.integers(0, len(y), size=len(y))
            replicates[b] = within(rows) + within(columns) - 2 * float(kernel[np.ix_(rows, columns)].mean())
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(value), float(low), float(high), sigma
