"""Distribution distances of discodiff.evaluation.distances: the Fréchet distance against closed forms and an
independent scipy computation, the small-set rules of FAD, FAD∞'s extrapolation and interval, the unbiased kernel
distance, and the statistics cache."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from discodiff.errors import ConfigError, DataError
from discodiff.evaluation import (
    GaussianStats,
    cached_stats,
    fad,
    fad_infinity,
    fit_inverse_count,
    frechet_distance,
    kernel_distance,
)
from discodiff.evaluation.distances import stats_cache_path


def random_rotation(rng, dim):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def random_spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.5 * np.eye(dim)


def gaussian(rng, n, mu, cov):
    return rng.multivariate_normal(mu, cov, size=n)


# --- the Fréchet distance ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 5, 16])
def test_frechet_distance_matches_closed_form_of_commuting_covariances(dim):
    rng = np.random.default_rng(dim)
    rotation = random_rotation(rng, dim)
    la, lb = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    mu_a, mu_b = rng.normal(size=dim), rng.normal(size=dim)
    cov_a, cov_b = (rotation * la) @ rotation.T, (rotation * lb) @ rotation.T
    expected = np.sum((mu_a - mu_b) ** 2) + la.sum() + lb.sum() - 2 * np.sqrt(la * lb).sum()
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for _ in range(5):
        dim = 16
        mu_a, mu_b = rng.normal(size=dim), rng.normal(size=dim)
        cov_a, cov_b = random_spd(rng, dim), random_spd(rng, dim)
        root_a = scipy.linalg.sqrtm(cov_a).real  # only here, as an independent check
        trace_sqrt = np.trace(scipy.linalg.sqrtm(root_a @ cov_b @ root_a).real)
        expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
        assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_is_symmetric_and_zero_for_identical_gaussians():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=16), rng.normal(size=16)
    cov_a, cov_b = random_spd(rng, 16), random_spd(rng, 16)
    forward, backward = frechet_distance(mu_a, cov_a, mu_b, cov_b), frechet_distance(mu_b, cov_b, mu_a, cov_a)
    assert forward == pytest.approx(backward, rel=1e-10)
    assert 0 <= frechet_distance(mu_a, cov_a, mu_a, cov_a) <= 1e-9


def test_frechet_distance_on_near_singular_covariances_is_finite_and_accurate():
    rng = np.random.default_rng(2)
    dim = 24
    rotation = random_rotation(rng, dim)
    la = np.logspace(-14, 0, dim)
    lb = np.r_[np.zeros(4), np.logspace(-12, 1, dim - 4)]
    cov_a, cov_b = (rotation * la) @ rotation.T, (rotation * lb) @ rotation.T
    mu = np.zeros(dim)
    value = frechet_distance(mu, cov_a, mu, cov_b)
    expected = np.sum((np.sqrt(la) - np.sqrt(lb)) ** 2)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert 0 <= frechet_distance(mu, cov_a, mu, cov_a) <= 1e-9


def test_frechet_distance_validates_its_arguments():
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(DataError, match="mu_b"):
        frechet_distance(mu, cov, np.zeros((3, 1)), cov)
    with pytest.raises(DataError, match="cov_a"):
        frechet_distance(mu, np.eye(4), mu, cov)
    with pytest.raises(DataError, match="D = 3.*D = 4"):
        frechet_distance(mu, cov, np.zeros(4), np.eye(4))
    with pytest.raises(DataError, match="cov_b.*NaN"):
        frechet_distance(mu, cov, mu, np.full((3, 3), np.nan))
    with pytest.raises(DataError, match="cov_b is not a covariance"):
        frechet_distance(mu, cov, mu, -np.eye(3))


# --- FAD and its small-set rule ------------------------------------------------------------------------------


def test_fad_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16))
    assert 0 <= fad(x, x) <= 1e-9
    assert fad(x, x + 1.0) == pytest.approx(16.0, rel=1e-9)  # a pure shift: ‖Δμ‖² only
    y = rng.normal(size=(300, 16))
    assert fad(x, y) == pytest.approx(fad(y, x), rel=1e-9)


def test_fad_refuses_too_small_sets_with_the_numbers():
    rng = np.random.default_rng(4)
    small, large = rng.normal(size=(8, 32)), rng.normal(size=(100, 32))
    with pytest.raises(DataError, match=r"8 clips of 32-dimensional.*at least 33.*allow_rank_deficient") as info:
        fad(small, large)
    assert "kernel_distance" in str(info.value)
    with pytest.raises(DataError, match="1 clip"):
        fad(small[:1], large, allow_rank_deficient=True)
    with pytest.raises(DataError, match=r"\[N clips, D dimensions\]"):
        fad(small[0], large)


def test_fad_allows_rank_deficient_sets_when_asked():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(8, 32)), rng.normal(size=(8, 32)) + 0.2
    value = fad(a, b, allow_rank_deficient=True)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(fad(b, a, allow_rank_deficient=True), rel=1e-9)
    assert 0 <= fad(a, a, allow_rank_deficient=True) <= 1e-9


def test_fad_accepts_stats_and_checks_their_dimension():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(100, 4)), rng.normal(size=(120, 4))
    assert fad(x, GaussianStats.from_embeddings(y)) == pytest.approx(fad(x, y), rel=1e-12)
    with pytest.raises(DataError, match="4-dimensional.*5-dimensional"):
        fad(x, rng.normal(size=(100, 5)))


# --- FAD∞ ----------------------------------------------------------------------------------------------------


def test_fit_inverse_count_recovers_an_exact_sequence():
    counts = np.array([50, 80, 120, 300, 1000])
    intercept, slope = fit_inverse_count(counts, 0.7 + 42.0 / counts)
    assert intercept == pytest.approx(0.7, rel=1e-10)
    assert slope == pytest.approx(42.0, rel=1e-10)
    with pytest.raises(DataError, match="two distinct"):
        fit_inverse_count([10, 10], [1.0, 1.0])


def shifted_gaussian_case(seed, dim, n):
    """Embeddings of N(shift, diag) and the exact reference N(0, I): (embeddings, reference stats, true FD)."""
    rng = np.random.default_rng(seed)
    variances = np.linspace(0.5, 1.5, dim)
    mu = np.zeros(dim)
    mu[0] = 0.5
    x = rng.normal(size=(n, dim)) * np.sqrt(variances) + mu
    reference = GaussianStats(np.zeros(dim), np.eye(dim), 10**6)
    return x, reference, frechet_distance(mu, np.diag(variances), np.zeros(dim), np.eye(dim))


def test_fad_infinity_removes_the_small_set_bias():
    errors_infinity, errors_smallest = [], []
    for seed in range(3):
        x, reference, truth = shifted_gaussian_case(seed, dim=32, n=1000)
        result = fad_infinity(x, reference, num_bootstrap=0, seed=seed)
        assert result.counts.tolist() == [250, 333, 417, 500, 583, 667, 750, 833, 917, 1000]
        assert np.isnan(result.ci_low) and np.isnan(result.ci_high)
        assert result.slope > 0
        errors_infinity.append(abs(result.value - truth))
        errors_smallest.append(abs(result.fads[0] - truth))
    assert np.mean(errors_infinity) < 0.25 * np.mean(errors_smallest)


def test_fad_infinity_is_deterministic_for_a_seed():
    x, reference, _ = shifted_gaussian_case(0, dim=4, n=200)
    first = fad_infinity(x, reference, num_bootstrap=20, seed=7)
    again = fad_infinity(x, reference, num_bootstrap=20, seed=7)
    assert (first.value, first.ci_low, first.ci_high) == (again.value, again.ci_low, again.ci_high)
    assert np.array_equal(first.fads, again.fads)
    assert fad_infinity(x, reference, num_bootstrap=20, seed=8).value != first.value


def test_fad_infinity_bootstrap_interval_covers_the_truth():
    covered = 0
    for seed in range(20):
        x, reference, truth = shifted_gaussian_case(100 + seed, dim=8, n=300)
        result = fad_infinity(x, reference, num_bootstrap=60, seed=seed)
        assert result.ci_low < result.ci_high
        covered += result.ci_low <= truth <= result.ci_high
    assert covered >= 16


def test_fad_infinity_checks_counts_and_set_sizes():
    x, reference, _ = shifted_gaussian_case(0, dim=16, n=17)
    with pytest.raises(DataError, match="17 clips of 16-dimensional"):
        fad_infinity(x, reference, num_bootstrap=0)
    x, reference, _ = shifted_gaussian_case(0, dim=16, n=100)
    with pytest.raises(DataError, match="smallest subset.*10 clips of 16-dimensional"):
        fad_infinity(x, reference, clip_counts=[10, 50, 100], num_bootstrap=0)
    assert np.isfinite(fad_infinity(x, reference, clip_counts=[10, 50, 100], num_bootstrap=0,
                                    allow_rank_deficient=True).value)
    with pytest.raises(ConfigError, match="clip_counts"):
        fad_infinity(x, reference, clip_counts=[50, 200], num_bootstrap=0)
    with pytest.raises(DataError, match="16-dimensional.*8-dimensional"):
        fad_infinity(x, GaussianStats(np.zeros(8), np.eye(8), 1000), num_bootstrap=0)


# --- kernel distance -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["poly", "rbf"])
def test_kernel_distance_separates_shifted_distributions(kernel):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    shifted = rng.normal(size=(150, 8)) + 0.5
    same, different = kernel_distance(a, b, kernel), kernel_distance(a, shifted, kernel)
    assert different > 0
    assert abs(same) < 0.1 * different
    assert kernel_distance(shifted, a, kernel) == pytest.approx(different, rel=1e-10)


@pytest.mark.parametrize("kernel", ["poly", "rbf"])
def test_kernel_distance_is_unbiased_on_small_sets(kernel):
    rng = np.random.default_rng(9)
    values = [kernel_distance(rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), kernel) for _ in range(2000)]
    assert all(np.isfinite(values))
    assert abs(np.mean(values)) < 4 * np.std(values) / np.sqrt(len(values))  # mean over draws ≈ the true 0


def test_kernel_distance_matches_its_formula():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))

    def k(a, b):
        return (a @ b / 3 + 1.0) ** 3

    within_x = np.mean([k(x[i], x[j]) for i in range(4) for j in range(4) if i != j])
    within_y = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if i != j])
    across = np.mean([k(a, b) for a in x for b in y])
    assert kernel_distance(x, y) == pytest.approx(within_x + within_y - 2 * across, rel=1e-12)


def test_kernel_distance_validates_its_arguments():
    x = np.zeros((3, 2))
    with pytest.raises(ConfigError, match="kernel must be"):
        kernel_distance(x, x, kernel="laplace")
    with pytest.raises(ConfigError, match="bandwidth"):
        kernel_distance(x, x, kernel="rbf", bandwidth=0)
    with pytest.raises(DataError, match="y has 1 clip"):
        kernel_distance(x, x[:1])
    assert kernel_distance(x, x, kernel="rbf") == 0.0  # every point the same


# --- statistics and their cache ------------------------------------------------------------------------------


def test_stats_save_load_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(11)
    stats = GaussianStats.from_embeddings(rng.normal(size=(50, 6)).astype(np.float32), {"embedder": "toy", "sr": 16000})
    loaded = GaussianStats.load(stats.save(tmp_path / "ref.npz"))
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.cov, stats.cov)
    assert loaded.mu.dtype == loaded.cov.dtype == np.float64
    assert (loaded.n, loaded.description) == (50, {"embedder": "toy", "sr": 16000})
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary file


def test_stats_load_refuses_damaged_files(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz is damaged.*delete it"):
        GaussianStats.load(broken)
    with pytest.raises(DataError, match="does not exist"):
        GaussianStats.load(tmp_path / "missing.npz")


class CountingEmbedder:
    def __init__(self, seed=0):
        self.calls, self.rng = 0, np.random.default_rng(seed)

    def __call__(self):
        self.calls += 1
        return self.rng.normal(size=(40, 5))


def test_cached_stats_reuses_the_same_key_and_recomputes_another(tmp_path):
    key = {"embedder": "toy", "settings": {"pool": "mean", "sr": 16000}, "data": "sha256:abc"}
    compute = CountingEmbedder()
    first = cached_stats(tmp_path, key, compute)
    again = cached_stats(tmp_path, dict(reversed(list(key.items()))), compute)  # same key, other order
    assert compute.calls == 1
    assert np.array_equal(first.mu, again.mu) and again.description == key
    changed = cached_stats(tmp_path, {**key, "data": "sha256:def"}, compute)
    assert compute.calls == 2 and not np.array_equal(changed.mu, first.mu)
    assert len(list(tmp_path.glob("stats-*.npz"))) == 2


def test_cached_stats_recomputes_a_file_with_another_stored_key(tmp_path):
    key = {"embedder": "toy"}
    GaussianStats(np.zeros(5), np.eye(5), 10, {"embedder": "other"}).save(stats_cache_path(tmp_path, key))
    compute = CountingEmbedder()
    with pytest.warns(UserWarning, match="another key"):
        stats = cached_stats(tmp_path, key, compute)
    assert compute.calls == 1 and stats.description == key
    assert GaussianStats.load(stats_cache_path(tmp_path, key)).description == key


def test_cached_stats_recomputes_a_damaged_file(tmp_path):
    key = {"embedder": "toy"}
    stats_cache_path(tmp_path, key).parent.mkdir(parents=True, exist_ok=True)
    stats_cache_path(tmp_path, key).write_bytes(b"truncated")
    compute = CountingEmbedder()
    with pytest.warns(UserWarning, match="damaged.*recomputing"):
        cached_stats(tmp_path, key, compute)
    assert compute.calls == 1
    cached_stats(tmp_path, key, compute)
    assert compute.calls == 1


def test_cached_stats_key_must_be_json(tmp_path):
    with pytest.raises(ConfigError, match="JSON-able"):
        cached_stats(tmp_path, {"embedder": object()}, CountingEmbedder())
    with pytest.raises(ConfigError, match="must be a dict"):
        cached_stats(tmp_path, ["toy"], CountingEmbedder())
