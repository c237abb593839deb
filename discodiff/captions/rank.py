"""The caption-quality filter of DiscoDiff: rank clips by the likelihood of their audio embeddings under a Gaussian
fitted to a reference collection, and keep the best share (the paper keeps the top 20%).

- :class:`GaussianReference` — ``N(μ, Σ)`` of reference embeddings ``[N, D]``: ``μ`` their mean, ``Σ`` scikit-learn's
  Ledoit–Wolf shrinkage covariance (the maximum-likelihood covariance shrunk towards a scaled identity, so it is
  positive definite even with fewer clips than dimensions; the shrinkage is recorded). Its
  :meth:`~GaussianReference.log_likelihood` is computed in float64 from the Cholesky factor of ``Σ`` (no inverse
  is formed); :meth:`~GaussianReference.save` / :meth:`~GaussianReference.load` keep it in one ``.npz`` (arrays
  ``mean``, ``covariance`` and a JSON ``metadata`` string: the embedder's settings, N, D, the shrinkage). The
  shrinkage target's scale is the mean variance over dimensions, so (as with any Ledoit–Wolf fit) dimensions whose
  variance lies far below that mean are regularised the most; embeddings of comparable scale per dimension suit it.
- :func:`rank_by_likelihood` — fit on the reference, score the candidates: ``[M]`` log-likelihoods.
- :func:`rank_table` — the ranking as rows ``{id, log_likelihood, percentile}``, best first; :func:`keep_top` keeps
  the best share; :func:`write_ranking_csv` / :func:`read_ranking_csv` store it as ``id,log_likelihood,percentile``
  (the columns of the paper's released FMA ranking).

**Order and ties.** Rows are sorted by log-likelihood, highest first; rows with equal log-likelihoods are sorted by
id (ascending string order), so the table and any share cut from it are the same on every run.

**Percentile.** A row's percentile is ``100 · (number of rows whose log-likelihood is ≤ its own) / M`` (the "weak"
percentile of score, ``scipy.stats.percentileofscore(..., kind="weak")``): the best row has 100, the worst
``100 / M``, and tied rows share the same percentile (the highest of the places they occupy).
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, OutputError, is_real
from ..outputs import atomic_file, load_array_record, save_array_record

REFERENCE_KIND = "discodiff.captions.GaussianReference"   # the "kind" field of a saved reference's metadata
REFERENCE_FORMAT = 1
REFERENCE_SUFFIX = ".npz"
COVARIANCE_ESTIMATOR = "sklearn.covariance.LedoitWolf"
RANKING_COLUMNS = ("id", "log_likelihood", "percentile")
RANKING_SUFFIX = ".csv"
PAPER_SHARE = 0.2             # DiscoDiff keeps the 20% most likely clips
SHARE_ROUNDING_DIGITS = 9     # share · M is rounded to this many decimals before the ceiling (0.7 · 10 → 7, not 8)


# --- input checks ---------------------------------------------------------------------------------------------


def _embedding_matrix(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 matrix ``[rows, D]`` with at least one row and one dimension."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} must be an embedding matrix [clips, D dimensions] with at least one clip, got shape "
                        f"{tuple(x.shape)}; stack one embedding per clip (Embedder.embed_files)")
    bad = int((~np.isfinite(x)).any(axis=1).sum())
    if bad:
        raise DataError(f"NaN or infinite values in {bad} of the {x.shape[0]} clips of {name}; check the embedder's "
                        "output for those clips (silent or broken audio) and drop or re-embed them")
    return x


def _json_text(value: dict, name: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be JSON-able (strings, numbers, lists, dicts) to be saved: {err}") from err


# --- the Gaussian reference -----------------------------------------------------------------------------------


class GaussianReference:
    """A Gaussian ``N(μ, Σ)`` fitted to reference embeddings, scoring candidates by their log-likelihood.

    Args:
        settings: a JSON-able record of how the embeddings were made (:meth:`Embedder.settings()
            <discodiff.evaluation.embedders.Embedder.settings>`); kept with the statistics and saved with them, so a
            reference is only used with candidates embedded the same way.

    Attributes (after :meth:`fit` or :meth:`load`):
        mean: ``μ [D]`` float64, the mean of the reference embeddings.
        covariance: ``Σ [D, D]`` float64, their Ledoit–Wolf shrinkage covariance (``(1 − s)·S + s·(tr S / D)·I``
            with ``S`` the maximum-likelihood covariance).
        shrinkage: ``s`` in [0, 1], as Ledoit–Wolf chose it.
        count: ``N``, the number of reference clips.
    """

    def __init__(self, settings: dict | None = None):
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"GaussianReference settings must be a dict (Embedder.settings()), got "
                              f"{type(settings).__name__}")
        self.settings = dict(settings or {})
        _json_text(self.settings, "GaussianReference settings")
        self.mean: np.ndarray | None = None
        self.covariance: np.ndarray | None = None
        self.shrinkage: float | None = None
        self.count: int | None = None
        self._cholesky: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """``D``, the embedding size."""
        return int(self._fitted().shape[0])

    def fit(self, reference) -> GaussianReference:
        """Fit ``μ`` and the Ledoit–Wolf ``Σ`` to ``reference [N, D]`` (``N ≥ 2``, finite, not all identical);
        returns ``self``."""
        from sklearn.covariance import LedoitWolf

        reference = _embedding_matrix(reference, "the reference embeddings")
        count = reference.shape[0]
        if count < 2:
            raise DataError(f"the reference embeddings have shape {reference.shape}: a covariance needs at least 2 "
                            "clips (N ≥ 2); embed more reference clips")
        if not np.ptp(reference, axis=0).any():
            raise DataError(f"the {count} reference embeddings are all identical, so they have no covariance; "
                            "embed different reference clips")
        estimator = LedoitWolf(store_precision=False).fit(reference)
        self._set(estimator.location_, estimator.covariance_, float(estimator.shrinkage_), count)
        return self

    def log_likelihood(self, x) -> np.ndarray:
        """``log N(x_m; μ, Σ)`` of each row of ``x [M, D]``: ``[M]`` float64.

        ``−½ (D log 2π + log det Σ + ‖L⁻¹(x − μ)‖²)`` with ``Σ = L Lᵀ`` (Cholesky), the triangular system solved
        directly, in float64.
        """
        from scipy.linalg import solve_triangular

        mean = self._fitted()
        x = _embedding_matrix(x, "the candidate embeddings")
        if x.shape[1] != mean.shape[0]:
            raise DataError(f"the candidate embeddings have shape {x.shape} but the reference was fitted on "
                            f"[{self.count}, {mean.shape[0]}] embeddings: D {x.shape[1]} ≠ {mean.shape[0]}; embed the "
                            "candidates with the reference's embedder and settings")
        whitened = solve_triangular(self._cholesky, (x - mean).T, lower=True, check_finite=False)
        log_det = 2.0 * np.log(np.diagonal(self._cholesky)).sum()
        return -0.5 * (mean.shape[0] * math.log(2 * math.pi) + log_det + np.einsum("dm,dm->m", whitened, whitened))

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz``: ``mean``, ``covariance`` and a JSON ``metadata`` string), atomically."""
        self._fitted()
        path = Path(path)
        if path.suffix.lower() != REFERENCE_SUFFIX:
            raise OutputError(f"Gaussian reference file {path} must end in {REFERENCE_SUFFIX} "
                              f"(e.g. {path.with_suffix(REFERENCE_SUFFIX).name})")
        text = _json_text(self._metadata(), "GaussianReference settings")
        return save_array_record(path, {"mean": self.mean, "covariance": self.covariance}, text)

    @classmethod
    def load(cls, path: str | Path) -> GaussianReference:
        """Read a file written by :meth:`save`; a missing, damaged or foreign file raises :class:`DataError`."""
        path = Path(path)
        fix = "fit it again with GaussianReference(settings).fit(reference).save(path)"
        if not path.is_file():
            raise DataError(f"Gaussian reference file {path} does not exist; {fix}")
        try:
            arrays, metadata = load_array_record(path)
            if metadata is None or metadata.get("kind") != REFERENCE_KIND:
                raise DataError(f"{path} is not a Gaussian reference file (it holds {', '.join(arrays)} without the "
                                f"kind {REFERENCE_KIND!r}); give a file GaussianReference.save wrote, or {fix}")
            if metadata.get("format") != REFERENCE_FORMAT:
                raise DataError(f"{path} is a Gaussian reference of format {metadata.get('format')!r}, this "
                                f"version reads format {REFERENCE_FORMAT}; {fix}")
            reference = cls(metadata["settings"])
            reference._set(arrays["mean"], arrays["covariance"], float(metadata["shrinkage"]), int(metadata["count"]))
            if reference.dim != metadata["dim"]:
                raise DataError(f"Gaussian reference file {path} is inconsistent: its arrays are {reference.dim}-"
                                f"dimensional but its metadata says D = {metadata['dim']}; {fix}")
        except DataError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"Gaussian reference file {path} is damaged or not an .npz file ({err}); {fix}") from err
        return reference

    def __repr__(self) -> str:
        if self.mean is None:
            return "GaussianReference(not fitted)"
        return f"GaussianReference(N={self.count}, D={self.dim}, shrinkage={self.shrinkage:.4g})"

    # --- internals ---

    def _fitted(self) -> np.ndarray:
        if self.mean is None:
            raise DataError("this GaussianReference is not fitted; call fit(reference embeddings) or "
                            "GaussianReference.load(path) first")
        return self.mean

    def _set(self, mean, covariance, shrinkage: float, count: int) -> None:
        """Check and keep the statistics, and factor ``Σ = L Lᵀ`` once."""
        from scipy.linalg import LinAlgError, cholesky

        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
            raise DataError(f"a Gaussian reference needs a mean [D] and a covariance [D, D], got shapes "
                            f"{tuple(mean.shape)} and {tuple(covariance.shape)}")
        if not (np.isfinite(mean).all() and np.isfinite(covariance).all()):
            raise DataError("the Gaussian reference's mean or covariance holds NaN or infinite values; fit it again "
                            "from finite embeddings")
        covariance = (covariance + covariance.T) / 2
        try:
            factor = cholesky(covariance, lower=True, check_finite=False)
        except LinAlgError:
            factor = None
        # a pivot L_ii² at round-off level (D·ε of the largest variance) means a singular Σ that factored by chance
        floor = mean.shape[0] * np.finfo(np.float64).eps * max(float(np.diagonal(covariance).max()), 0.0)
        if factor is None or np.diagonal(factor).min() ** 2 <= floor:
            hint = " (Ledoit-Wolf never shrinks the covariance of 2 clips: use at least 3)" if count == 2 else ""
            raise DataError(f"the covariance of {count} reference clips in {mean.shape[0]} dimensions is singular "
                            f"(Ledoit-Wolf shrinkage {shrinkage:.3g}); fit on more, more varied reference clips{hint}")
        self.mean, self.covariance, self.shrinkage, self.count = mean, covariance, shrinkage, count
        self._cholesky = factor

    def _metadata(self) -> dict:
        from importlib.metadata import version

        return {"kind": REFERENCE_KIND, "format": REFERENCE_FORMAT, "count": self.count, "dim": self.dim,
                "shrinkage": self.shrinkage, "covariance_estimator": COVARIANCE_ESTIMATOR,
                "sklearn_version": version("scikit-learn"), "settings": self.settings}


def rank_by_likelihood(reference: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The log-likelihood ``[M]`` (float64) of each candidate embedding ``candidates [M, D]`` under the Gaussian
    fitted to ``reference [N, D]`` (:class:`GaussianReference`: mean and Ledoit–Wolf covariance). Higher is more
    like the reference."""
    return GaussianReference().fit(reference).log_likelihood(candidates)


# --- the ranking table ----------------------------------------------------------------------------------------


def _table_order(row: dict) -> tuple[float, str]:
    """Best first: the highest log-likelihood, then the smaller id."""
    return -row["log_likelihood"], row["id"]


def rank_table(ids: Sequence[str], log_likelihoods) -> list[dict]:
    """Rows ``{"id", "log_likelihood", "percentile"}``, one per clip, sorted best first (ties by id).

    ``percentile`` is ``100 · #{log-likelihoods ≤ this one} / M``: 100 for the best row, tied rows equal (see the
    module docstring).
    """
    from scipy.stats import rankdata

    ids = list(ids)
    values = np.asarray(log_likelihoods, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] != len(ids):
        raise DataError(f"rank_table needs one log-likelihood per id: got {len(ids)} ids and log-likelihoods of shape "
                        f"{tuple(values.shape)}")
    bad_ids = [repr(name) for name in ids if not isinstance(name, str) or not name]
    if bad_ids:
        raise DataError(f"rank_table needs every id as a non-empty string, got {', '.join(bad_ids[:3])}")
    repeated = sorted(name for name, count in Counter(ids).items() if count > 1)
    if repeated:
        raise DataError(f"rank_table needs unique ids; repeated: {', '.join(repeated[:3])}")
    if not np.isfinite(values).all():
        bad = [ids[i] for i in np.flatnonzero(~np.isfinite(values))[:3]]
        raise DataError(f"rank_table got NaN or infinite log-likelihoods for {', '.join(bad)}; score finite embeddings")
    percentiles = 100.0 * rankdata(values, method="max") / max(len(ids), 1)
    rows = [{"id": name, "log_likelihood": float(value), "percentile": float(percentile)}
            for name, value, percentile in zip(ids, values, percentiles)]
    return sorted(rows, key=_table_order)


def keep_count(total: int, share: float) -> int:
    """How many of ``total`` rows :func:`keep_top` keeps: ``⌈share · total⌉`` (``share · total`` first rounded to 9
    decimals, so float round-off never adds a row), hence at least one of a non-empty table."""
    if not is_real(share) or not math.isfinite(share) or not 0 < share <= 1:
        raise ConfigError(f"share must be a number in (0, 1] (the fraction of clips to keep; the paper keeps "
                          f"{PAPER_SHARE:g}), got {share!r}")
    return math.ceil(round(share * total, SHARE_ROUNDING_DIGITS))


def keep_top(rows: Sequence[dict], share: float = PAPER_SHARE) -> list[dict]:
    """The best ``⌈share · M⌉`` of ``rows`` (:func:`keep_count`), in table order (best first, ties by id): exactly
    that many, so a tie at the cut keeps the tied rows with the smaller ids."""
    count = keep_count(len(rows), share)
    return sorted(rows, key=_table_order)[:count]


def write_ranking_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write ``rows`` to ``path`` as CSV with the header ``id,log_likelihood,percentile``, in table order, atomically.
    Numbers are written with ``repr`` (shortest exact form), so :func:`read_ranking_csv` gives the same floats."""
    path = Path(path)
    if path.suffix.lower() != RANKING_SUFFIX:
        raise OutputError(f"ranking file {path} must end in {RANKING_SUFFIX} "
                          f"(e.g. {path.with_suffix(RANKING_SUFFIX).name})")
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(RANKING_COLUMNS):
            raise DataError(f"a ranking row must be a dict with exactly the keys {', '.join(RANKING_COLUMNS)} "
                            f"(rank_table's rows), got {row!r}")
    with atomic_file(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RANKING_COLUMNS)
        for row in sorted(rows, key=_table_order):
            writer.writerow((row["id"], repr(float(row["log_likelihood"])), repr(float(row["percentile"]))))
    return path


def read_ranking_csv(path: str | Path) -> list[dict]:
    """The rows of a ranking file written by :func:`write_ranking_csv`, in file order; a missing file, another header
    or a malformed row raises :class:`DataError` naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ranking file {path} does not exist; write it with write_ranking_csv(path, rank_table(...))")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != RANKING_COLUMNS:
            raise DataError(f"ranking file {path} has the header {header!r}; expected {','.join(RANKING_COLUMNS)}")
        rows = []
        for record in reader:
            try:
                name, log_likelihood, percentile = record
                rows.append({"id": name, "log_likelihood": float(log_likelihood), "percentile": float(percentile)})
            except ValueError as err:
                raise DataError(f"ranking file {path}, line {reader.line_num}: {record!r} is not "
                                f"id,log_likelihood,percentile ({err}); write the file again") from err
    return rows
