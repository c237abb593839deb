"""The caption-quality filter of discodiff.captions.rank: the Gaussian log-likelihood against scipy's logpdf, the
Ledoit–Wolf fit against scikit-learn, save/load, input errors, percentiles / ties / the kept share, the CSV format;
and, on rendered Bach chorales embedded by the shipped model's codec, planted out-of-distribution clips (white noise,
a sustained sine, a sustained organ note, a drum-only groove) ranking below held-aside chorales. The caption_ranking
bench runs end to end on the same renders."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import multivariate_normal, percentileofscore
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from discodiff.captions.rank import (
    RANKING_COLUMNS,
    GaussianReference,
    keep_count,
    keep_top,
    rank_by_likelihood,
    rank_table,
    read_ranking_csv,
    write_ranking_csv,
)
from discodiff.errors import ConfigError, DataError, OutputError
from discodiff.evaluation.distances import GaussianStats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def correlated(rng, n: int, dim: int, scales=None) -> np.ndarray:
    """``[n, dim]`` Gaussian rows with correlated dimensions of different scales."""
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    scales = np.ones(dim) if scales is None else scales
    return (rng.normal(size=(n, dim)) @ mixing) * scales + rng.normal(size=dim)


# --- the Gaussian ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, dim, spread", [(40, 8, 0), (12, 64, 0), (200, 16, 6)])
def test_log_likelihood_matches_scipy_logpdf(n, dim, spread):
    """Fewer and more clips than dimensions, and dimensions whose scales span 10^±spread/2 (ill-conditioned)."""
    rng = np.random.default_rng(dim)
    scales = np.logspace(-spread / 2, spread / 2, dim)
    reference = GaussianReference().fit(correlated(rng, n, dim, scales))
    candidates = correlated(rng, 7, dim, scales) * 1.5
    expected = multivariate_normal(reference.mean, reference.covariance).logpdf(candidates)
    scores = reference.log_likelihood(candidates)
    assert scores.dtype == np.float64 and scores.shape == (7,)
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    np.testing.assert_allclose(reference.log_likelihood(candidates[:1]), expected[:1], rtol=1e-9)


def test_fit_is_sklearn_ledoit_wolf():
    rng = np.random.default_rng(0)
    x = correlated(rng, 30, 20)
    reference = GaussianReference({"embedder": "test"}).fit(x)
    expected = LedoitWolf().fit(x)
    np.testing.assert_allclose(reference.covariance, expected.covariance_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(reference.mean, x.mean(axis=0), rtol=1e-12)
    assert reference.shrinkage == pytest.approx(expected.shrinkage_, rel=1e-12) and 0 < reference.shrinkage < 1
    assert (reference.count, reference.dim) == (30, 20)
    # shrinkage makes the covariance of fewer clips than dimensions invertible; the plain covariance is singular
    few = correlated(rng, 5, 20)
    assert np.linalg.matrix_rank(np.cov(few.T)) == 4
    assert np.linalg.eigvalsh(GaussianReference().fit(few).covariance).min() > 0


def test_rank_by_likelihood_scores_the_typical_above_the_unusual():
    rng = np.random.default_rng(1)
    reference = correlated(rng, 50, 10)
    typical, far = reference.mean(axis=0), reference.mean(axis=0) + 10 * reference.std(axis=0)
    scores = rank_by_likelihood(reference, np.stack([far, typical]))
    np.testing.assert_array_equal(scores, GaussianReference().fit(reference).log_likelihood(np.stack([far, typical])))
    assert scores[1] > scores[0] + 50


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    rng = np.random.default_rng(2)
    settings = {"embedder": "codec", "dim": 12, "window_seconds": 2.0}
    reference = GaussianReference(settings).fit(correlated(rng, 9, 12))
    candidates = correlated(rng, 5, 12)
    path = reference.save(tmp_path / "reference.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["reference.npz"]  # no temporary file left behind
    loaded = GaussianReference.load(path)
    np.testing.assert_array_equal(loaded.log_likelihood(candidates), reference.log_likelihood(candidates))
    assert loaded.settings == settings and loaded.shrinkage == reference.shrinkage and loaded.count == 9
    with np.load(path) as data:
        metadata = json.loads(str(data["metadata"]))
    assert (metadata["count"], metadata["dim"], metadata["shrinkage"]) == (9, 12, reference.shrinkage)


def test_load_refuses_other_files(tmp_path):
    rng = np.random.default_rng(3)
    stats = GaussianStats.from_embeddings(correlated(rng, 5, 4)).save(tmp_path / "stats.npz")
    with pytest.raises(DataError, match="stats.npz is not a Gaussian reference file"):
        GaussianReference.load(stats)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DataError, match="text.npz is damaged or not an .npz file"):
        GaussianReference.load(tmp_path / "text.npz")
    with pytest.raises(DataError, match="missing.npz does not exist"):
        GaussianReference.load(tmp_path / "missing.npz")
    with pytest.raises(OutputError, match="must end in .npz"):
        GaussianReference().fit(correlated(rng, 5, 4)).save(tmp_path / "reference.safetensors")
    with pytest.raises(DataError, match="not fitted"):
        GaussianReference().save(tmp_path / "reference.npz")
    with pytest.raises(ConfigError, match="JSON-able"):
        GaussianReference({"embedder": object()})


def test_input_errors_name_the_problem():
    rng = np.random.default_rng(4)
    reference = GaussianReference().fit(correlated(rng, 10, 4))
    with pytest.raises(DataError, match=r"shape \(3, 5\) but the reference was fitted on \[10, 4\].*D 5 ≠ 4"):
        reference.log_likelihood(np.zeros((3, 5)))
    with pytest.raises(DataError, match=r"shape \(1, 4\).*at least 2 clips"):
        GaussianReference().fit(np.zeros((1, 4)))
    nan_reference = correlated(rng, 6, 4)
    nan_reference[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values in 1 of the 6 clips of the reference embeddings"):
        GaussianReference().fit(nan_reference)
    with pytest.raises(DataError, match="NaN or infinite values in 2 of the 2 clips of the candidate embeddings"):
        reference.log_likelihood(np.full((2, 4), np.inf))
    with pytest.raises(DataError, match="covariance of 2 reference clips in 4 dimensions is singular.*at least 3"):
        GaussianReference().fit(correlated(rng, 2, 4))  # sklearn's Ledoit-Wolf shrinkage of 2 clips is 0
    with pytest.raises(DataError, match="all identical"):
        GaussianReference().fit(np.ones((5, 4)))
    with pytest.raises(DataError, match=r"embedding matrix \[clips, D dimensions\].*shape \(4,\)"):
        reference.log_likelihood(np.zeros(4))
    with pytest.raises(DataError, match="not fitted"):
        GaussianReference().log_likelihood(np.zeros((1, 4)))


# --- the ranking table -----------------------------------------------------------------------------------------


def test_rank_table_order_percentiles_and_ties():
    ids = ["d", "b", "a", "e", "c"]
    scores = [-3.0, 1.0, 1.0, 7.5, -10.0]
    rows = rank_table(ids, scores)
    assert [row["id"] for row in rows] == ["e", "a", "b", "d", "c"]  # best first; the tie a = b by id
    assert [row["percentile"] for row in rows] == [100.0, 80.0, 80.0, 40.0, 20.0]
    for row in rows:
        assert row["percentile"] == pytest.approx(percentileofscore(scores, row["log_likelihood"], kind="weak"))
        assert set(row) == set(RANKING_COLUMNS) and isinstance(row["log_likelihood"], float)
    assert rank_table(["x", "y"], [0.0, 0.0]) == [{"id": "x", "log_likelihood": 0.0, "percentile": 100.0},
                                                  {"id": "y", "log_likelihood": 0.0, "percentile": 100.0}]
    assert rank_table([], []) == []


def test_rank_table_errors():
    with pytest.raises(DataError, match="got 2 ids and log-likelihoods of shape \\(3,\\)"):
        rank_table(["a", "b"], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="unique ids; repeated: a"):
        rank_table(["a", "b", "a"], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="NaN or infinite log-likelihoods for b"):
        rank_table(["a", "b"], [1.0, np.nan])
    with pytest.raises(DataError, match="non-empty string"):
        rank_table(["a", ""], [1.0, 2.0])


def test_keep_top_share_rounding_and_ties():
    rows = rank_table([f"clip{i:02d}" for i in range(10)], np.arange(10.0))
    assert [row["id"] for row in keep_top(rows, 0.2)] == ["clip09", "clip08"]
    assert keep_count(10, 0.7) == 7 and keep_count(10, 0.71) == 8 and keep_count(10, 1.0) == 10
    assert len(keep_top(rows, 0.01)) == 1  # at least one row when share > 0
    assert keep_top(rows[::-1], 0.3) == rows[:3]  # any row order: cut in table order
    assert keep_top([], 0.5) == []
    tied = rank_table(["c", "a", "b", "d"], [1.0, 1.0, 1.0, 0.0])
    assert [row["id"] for row in keep_top(tied, 0.5)] == ["a", "b"]  # a tie at the cut keeps the smaller ids
    for share in (0, -0.1, 1.5, float("nan"), True, "0.2"):
        with pytest.raises(ConfigError, match="share must be a number in \\(0, 1\\]"):
            keep_top(rows, share)


def test_ranking_csv_round_trip(tmp_path):
    rows = rank_table(["plain", "with,comma", 'with "quote"', "ümlaut"], [0.1 + 0.2, -1e-300, 12345.678901234567, -7])
    path = write_ranking_csv(tmp_path / "ranking.csv", rows)
    assert read_ranking_csv(path) == rows
    with open(path, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["id", "log_likelihood", "percentile"]
    assert [p.name for p in tmp_path.iterdir()] == ["ranking.csv"]
    (tmp_path / "other.csv").write_text("name,score\na,1\n")
    with pytest.raises(DataError, match="other.csv has the header \\['name', 'score'\\]"):
        read_ranking_csv(tmp_path / "other.csv")
    (tmp_path / "broken.csv").write_text("id,log_likelihood,percentile\na,1.0,100\nb,high,50\n")
    with pytest.raises(DataError, match="broken.csv, line 3"):
        read_ranking_csv(tmp_path / "broken.csv")
    with pytest.raises(OutputError, match="must end in .csv"):
        write_ranking_csv(tmp_path / "ranking.tsv", rows)
    with pytest.raises(DataError, match="exactly the keys id, log_likelihood, percentile"):
        write_ranking_csv(tmp_path / "bad.csv", [{"id": "a"}])


# --- the must-show: planted clips rank at the bottom -------------------------------------------------------------

PIECES, REFERENCE_PIECES, RENDER_SECONDS, CLIP_SECONDS = 10, 7, 6.0, 2.0
TEST_KINDS = ("noise", "sine", "organ", "drums")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The first 10 train-split Bach chorales rendered for 6 s (seed 0)."""
    from discodiff.corpus.synth import RendererUnavailableError

    try:
        from discodiff.corpus.render import render_corpus
        from discodiff.corpus.splits import load_split
    except ImportError as err:
        pytest.skip(f"rendering chorales needs the render extra (pip install 'discodiff[render]'): {err}")
    pieces = sorted(piece for piece, split in load_split().items() if split == "train" and piece.startswith("bach/"))
    root = tmp_path_factory.mktemp("chorales")
    try:
        report = render_corpus(pieces[:PIECES], root, seconds=RENDER_SECONDS, seed=0, progress=False)
    except RendererUnavailableError as err:
        pytest.skip(f"rendering chorales needs FluidSynth and its soundfont: {err}")
    assert len(report.rendered) == PIECES
    return root


@pytest.fixture(scope="module")
def codec_embedder():
    from discodiff.codec.resolve import load_codec
    from discodiff.evaluation.embedders import CodecEmbedder
    from discodiff.pretrained import shipped_model_dir

    return CodecEmbedder(load_codec(shipped_model_dir() / "codec"), window_seconds=CLIP_SECONDS)


def clip_stems(root) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per piece, its three 2 s clips as ``(vocals, accompaniment)``."""
    from discodiff.audio import load_audio
    from discodiff.data.layout import find_stem_pairs

    pieces = []
    for pair in find_stem_pairs(root):
        vocals, accompaniment = (load_audio(path).numpy()[0] for path in (pair.vocals, pair.accompaniment[0]))
        length = round(CLIP_SECONDS * 44100)
        pieces.append([(vocals[i : i + length], accompaniment[i : i + length])
                       for i in range(0, vocals.size - length + 1, length)])
    return pieces


def test_planted_clips_rank_below_held_aside_chorales(rendered, codec_embedder):
    """7 chorales (21 clips of 2 s) are the reference; 3 other chorales (9 clips) the held-aside candidates, with 12
    planted ones: noise, a sine, an organ note and drums (3 each, at the chorales' RMS; made by the caption_ranking
    bench's :func:`planted_clip`). The held-aside chorales outrank the planted clips (AUC ≥ 0.95), the lowest row is
    a planted clip, and the paper's top-20% cut keeps no planted clip."""
    from discodiff.bench.caption_ranking import planted_clip
    from discodiff.corpus.synth import FluidSynthRenderer

    pieces = clip_stems(rendered)
    assert len(pieces) == PIECES and all(len(clips) == 3 for clips in pieces)

    def embed(audio):
        return codec_embedder(audio, 44100)

    reference = np.stack([embed(v + a) for clips in pieces[:REFERENCE_PIECES] for v, a in clips])
    held_aside = [clip for clips in pieces[REFERENCE_PIECES:] for clip in clips]
    ids = [f"chorale-{i}" for i in range(len(held_aside))]
    candidates = [embed(v + a) for v, a in held_aside]
    renderer = FluidSynthRenderer()
    for kind_index, kind in enumerate(TEST_KINDS):
        for index in range(3):
            vocals, accompaniment = held_aside[3 * index + kind_index % 3]
            rng = np.random.default_rng([index, kind_index])
            ids.append(f"planted-{kind}-{index}")
            candidates.append(embed(planted_clip(kind, vocals, accompaniment, 44100, rng, renderer)))

    scores = rank_by_likelihood(reference, np.stack(candidates))
    rows = rank_table(ids, scores)
    is_chorale = np.array([name.startswith("chorale") for name in ids])
    auc = roc_auc_score(is_chorale, scores)
    print(f"AUC {auc:.3f}; " + ", ".join(f"{row['id']} {row['log_likelihood']:.0f}" for row in rows))
    assert auc >= 0.95, rows
    assert rows[-1]["id"].startswith("planted-")
    assert all(row["id"].startswith("chorale") for row in keep_top(rows, 0.2))
    for kind in TEST_KINDS:  # every kind is clearly below the typical held-aside chorale
        assert np.median(scores[[name.startswith(f"planted-{kind}") for name in ids]]) < np.median(scores[is_chorale])


def test_caption_ranking_bench_end_to_end(rendered, tmp_path, capsys):
    from discodiff.bench.caption_ranking import PLANTED_KINDS, main

    record = main(["--data", str(rendered), "--embedder", "codec", "--limit", "6", "--planted", "1", "--seconds", "2",
                   "--bootstrap", "20", "--quiet", "--csv", str(tmp_path / "ranking.csv"),
                   "--json", str(tmp_path / "record.json")])
    assert record["reference_clips"] == 3 and record["candidate_clips"] == 3 + len(PLANTED_KINDS)
    rows = read_ranking_csv(tmp_path / "ranking.csv")
    assert rows == record["ranking"] and {row["id"] for row in rows} >= {f"planted-{k}-00" for k in PLANTED_KINDS}
    summary = record["summary"]
    assert summary["auc"]["negatives"] == len(PLANTED_KINDS) and summary["auc"]["positives"] == 3
    assert 0 <= summary["auc"]["low"] <= summary["auc"]["high"] <= 1
    assert json.loads((tmp_path / "record.json").read_text())["summary"] == summary
    assert "AUC held-aside chorale above planted clip" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--planted 4: must be from 1 to the number of held-aside tracks \\(3"):
        main(["--data", str(rendered), "--limit", "6", "--planted", "4"])
