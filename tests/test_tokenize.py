"""``discodiff tokenize``: semantic-token columns of a latent cache from SSL features of its stems, and the dataset
serving them cropped in sync with the latents.

Two rendered Bach chorales (5 s, 2 s windows: two full windows and a 1 s tail each), the tiny codec, the tiny random
HuBERT (50 Hz at 16 kHz) and k=8. CPU only, no network.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import load_from_disk
from typer.testing import CliRunner

from discodiff.audio import load_audio
from discodiff.cli import app
from discodiff.codec import build_tiny_codec
from discodiff.conditioning.semantic import SemanticTokenizer
from discodiff.conditioning.ssl import build_tiny_hubert, load_ssl_features
from discodiff.data.cache import CacheLayout, CodecInfo, dataset_fingerprint
from discodiff.data.dataset import LatentCropDataset, collate_latent_batch
from discodiff.data.prepare import prepare_latent_cache
from discodiff.data.tokenize import tokenize_cache, tokenizer_sha256
from discodiff.data.windows import WindowSettings
from discodiff.errors import ConfigError, DataError, ExistingWorkError

render = pytest.importorskip("discodiff.corpus.render", reason="rendering needs the render extra")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread

PIECES = ["bach/bwv66.6", "bach/bwv2.6"]
TRACKS = ["bach-bwv2.6", "bach-bwv66.6"]
WINDOWS = WindowSettings(window_seconds=2.0, min_seconds=1.0, quiet_dbfs=-40.0)
RC = 44100 / 512  # the tiny codec's frame rate
RS = 50.0  # the tiny HuBERT's
K = 8
runner = CliRunner()


class Counting:
    """A feature extractor that counts the windows it is given (each call holds vocal and accompaniment)."""

    def __init__(self, inner):
        self.inner, self.windows = inner, 0
        self.sample_rate, self.frame_rate, self.dim = inner.sample_rate, inner.frame_rate, inner.dim
        self.description, self.min_samples = inner.description, inner.min_samples

    def __call__(self, audio):
        self.windows += audio.shape[0] // 2
        return self.inner(audio)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The corpus, the tiny HuBERT directory, its extractor, and a cache tokenized once (not to be modified)."""
    root = tmp_path_factory.mktemp("tokenize")
    corpus, cache, hubert = root / "corpus", root / "cache", root / "hubert"
    render.render_corpus(PIECES, corpus, seconds=5.0, seed=0, progress=False)
    prepare_latent_cache(corpus, cache, build_tiny_codec(seed=0), "tiny", windows=WINDOWS, progress=False)
    build_tiny_hubert(seed=0).save_pretrained(str(hubert))
    extractor = load_ssl_features("hubert", hubert, layer=1)
    tokenize_cache(cache, corpus, extractor, k=K, progress=False, source={"kind": "hubert", "id": str(hubert), "layer": 1})
    return {"root": root, "corpus": corpus, "cache": cache, "hubert": hubert, "extractor": extractor}


def copy_of(work, name: str, what: str = "cache") -> Path:
    target = work["root"] / name
    shutil.copytree(work[what], target)
    return target


def columns(cache: Path) -> dict[str, np.ndarray]:
    data = load_from_disk(str(CacheLayout(cache).semantic_dataset_dir)).with_format("numpy")[:]
    return {name: np.asarray(data[name]) for name in ("track_id", "window", "num_semantic_frames", "semantic",
                                                       "vocal_semantic")}


def test_columns_are_aligned_with_the_cache_rows_and_tokenize_each_window(work):
    layout = CacheLayout(work["cache"])
    main = load_from_disk(str(layout.dataset_dir)).with_format("numpy")[:]
    semantic = columns(work["cache"])
    assert semantic["track_id"].tolist() == main["track_id"].tolist() and sorted(set(main["track_id"])) == TRACKS
    assert semantic["window"].tolist() == main["window"].tolist()
    window_frames = main["latents"].shape[-1]
    frames = round(window_frames * RS / RC)
    assert frames == 100 and semantic["semantic"].shape == semantic["vocal_semantic"].shape == (6, frames)
    stored = load_from_disk(str(layout.semantic_dataset_dir)).features
    assert all(stored[name].feature.dtype == "int16" and stored[name].length == frames for name in ("semantic", "vocal_semantic"))
    for i, count in enumerate(semantic["num_semantic_frames"]):
        seconds = main["num_frames"][i] * 512 / 44100
        assert abs(count - seconds * RS) <= 1.5  # 2 s windows → 100 frames, the 1 s tails → 50
        for name in ("semantic", "vocal_semantic"):
            assert (0 <= semantic[name][i, :count]).all() and (semantic[name][i, :count] < K).all()
            assert (semantic[name][i, count:] == -1).all()
    assert sorted(set(semantic["num_semantic_frames"].tolist())) == [50, 100]

    info = json.loads(layout.semantic_info_file.read_text())
    extractor = work["extractor"]
    tokenizer = SemanticTokenizer.load(layout.semantic_tokenizer_file)
    assert (info["k"], info["frame_rate"], info["sample_rate"], info["noise_std"], info["seed"]) == (K, RS, 16000, 0.0, 0)
    assert info["extractor"] == extractor.description == tokenizer.description and tokenizer.k == K
    assert info["tokenizer_sha256"] == tokenizer_sha256(tokenizer)
    assert info["dataset_fingerprint"] == dataset_fingerprint(layout)
    assert info["source"]["layer"] == 1 and (info["tracks"], info["windows"], info["semantic_frames"]) == (2, 6, 100)

    # a direct computation: the stems at 16 kHz from start_seconds, through the extractor and the tokenizer
    for i in (1, 2, 4):
        track = main["track_id"][i]
        stems = [load_audio(work["corpus"] / track / f"{stem}.wav", 16000)[0].numpy() for stem in ("vocals", "accompaniment")]
        start, length = round(main["start_seconds"][i] * 16000), round(main["num_frames"][i] * 512 * 16000 / 44100)
        audio = np.zeros((2, 1, length), np.float32)
        for j, stem in enumerate(stems):
            piece = stem[start : start + length]
            audio[j, 0, : len(piece)] = piece
        tokens = tokenizer.tokenize(extractor, torch.from_numpy(audio)).numpy()
        count = semantic["num_semantic_frames"][i]
        assert tokens.shape[1] == count
        assert (tokens[0] == semantic["vocal_semantic"][i, :count]).mean() > 0.95
        assert (tokens[1] == semantic["semantic"][i, :count]).mean() > 0.95


def test_rerun_resumes_without_recomputing_and_redoes_a_lost_shard(work):
    cache = copy_of(work, "resume")
    layout = CacheLayout(cache)
    before = columns(cache)
    counting = Counting(work["extractor"])
    tokenize_cache(cache, work["corpus"], counting, k=K, progress=False)
    assert counting.windows == 0 and all(np.array_equal(before[n], columns(cache)[n]) for n in before)

    (layout.semantic_shards_dir / "bach-bwv66.6.npz").unlink()
    leftovers = [layout.semantic_shards_dir / ".bach-bwv66.6.tmp-12345.npz", layout.semantic_dir / ".dataset.tmp-12345"]
    leftovers[0].write_bytes(b"half a shard")  # what a kill mid-write leaves
    leftovers[1].mkdir()
    counting = Counting(work["extractor"])
    tokenize_cache(cache, work["corpus"], counting, k=K, progress=False)
    assert counting.windows == 3  # that track's three windows alone; the tokenizer is not fitted again
    assert all(np.array_equal(before[n], columns(cache)[n]) for n in before)
    assert not any(path.exists() for path in leftovers)

    (layout.semantic_shards_dir / "bach-bwv2.6.npz").write_bytes(b"not a shard")  # never left by a run; still redone
    counting = Counting(work["extractor"])
    tokenize_cache(cache, work["corpus"], counting, k=K, progress=False)
    assert counting.windows == 3 and all(np.array_equal(before[n], columns(cache)[n]) for n in before)

    # killed between moving the published dataset aside and the new one in: put back, nothing recomputed
    shutil.copytree(layout.semantic_dataset_dir, layout.semantic_dir / ".dataset.old-12345")
    shutil.rmtree(layout.semantic_dataset_dir)
    counting = Counting(work["extractor"])
    tokenize_cache(cache, work["corpus"], counting, k=K, progress=False)
    assert counting.windows == 0 and all(np.array_equal(before[n], columns(cache)[n]) for n in before)
    LatentCropDataset(cache, 64, semantic_tokens=True)


def test_other_settings_are_refused_without_overwrite(work):
    cache = copy_of(work, "settings")
    for change in ({"k": 4}, {"k": K, "noise_std": 0.1}, {"k": K, "seed": 1}):
        with pytest.raises(ExistingWorkError, match="--overwrite"):
            tokenize_cache(cache, work["corpus"], work["extractor"], progress=False, **change)
    fitted = SemanticTokenizer.load(CacheLayout(cache).semantic_tokenizer_file)
    with pytest.raises(ExistingWorkError, match="tokenizer"):
        tokenize_cache(cache, work["corpus"], work["extractor"], tokenizer=fitted, progress=False)
    counting = Counting(work["extractor"])  # the same tokens whoever fitted the tokenizer: nothing is recomputed
    tokenize_cache(cache, work["corpus"], counting, tokenizer=fitted, overwrite=True, progress=False)
    assert counting.windows == 0
    tokenize_cache(cache, work["corpus"], work["extractor"], k=4, overwrite=True, progress=False)
    info = json.loads(CacheLayout(cache).semantic_info_file.read_text())
    assert info["k"] == 4 and columns(cache)["semantic"].max() < 4


def test_a_tokenizer_of_another_extractor_is_refused(work):
    other = load_ssl_features("hubert", work["hubert"], layer=2)
    tokenizer = SemanticTokenizer(torch.randn(K, other.dim), other.description, other.frame_rate)
    cache = copy_of(work, "other-tokenizer")
    with pytest.raises(ConfigError, match="fitted on features of"):
        tokenize_cache(cache, work["corpus"], work["extractor"], tokenizer=tokenizer, progress=False, overwrite=True)


def test_noisy_vocals_change_vocal_tokens_only_and_are_reproducible(work):
    tokenizer = SemanticTokenizer.load(CacheLayout(work["cache"]).semantic_tokenizer_file)
    clean = columns(work["cache"])
    results = []
    for name in ("noisy-a", "noisy-b"):
        cache = copy_of(work, name)
        tokenize_cache(cache, work["corpus"], work["extractor"], tokenizer=tokenizer, noise_std=0.5, overwrite=True,
                       progress=False, batch_size=1 if name == "noisy-a" else 8)
        results.append(columns(cache))
    assert np.array_equal(results[0]["semantic"], clean["semantic"])  # the accompaniment has no noise
    assert not np.array_equal(results[0]["vocal_semantic"], clean["vocal_semantic"])
    assert np.array_equal(results[0]["vocal_semantic"], results[1]["vocal_semantic"])  # noise per (seed, track, window)


def test_a_republished_cache_is_not_served_stale_and_is_tokenized_again(work):
    corpus, cache = copy_of(work, "re-corpus", "corpus"), copy_of(work, "re-cache")
    path = corpus / "bach-bwv2.6" / "accompaniment.wav"
    audio, rate = sf.read(path, dtype="float32")
    sf.write(path, 0.7 * audio, rate, subtype="FLOAT")
    prepare_latent_cache(corpus, cache, build_tiny_codec(seed=0), "tiny", windows=WINDOWS, progress=False)
    with pytest.raises(DataError, match="earlier version.*discodiff tokenize"):
        LatentCropDataset(cache, 64, semantic_tokens=True)
    counting = Counting(work["extractor"])
    tokenize_cache(cache, corpus, counting, k=K, progress=False)
    assert counting.windows > 6  # the tokenizer is fitted again on the new data, and every window is redone
    LatentCropDataset(cache, 64, semantic_tokens=True)


def test_missing_stems_and_separated_caches_are_refused(work):
    corpus = copy_of(work, "missing", "corpus")
    shutil.rmtree(corpus / "bach-bwv2.6")
    cache = copy_of(work, "missing-cache")
    with pytest.raises(DataError, match=r"holds no stems.*'bach-bwv2\.6'") as caught:
        tokenize_cache(cache, corpus, work["extractor"], k=K, progress=False)
    assert str(corpus) in str(caught.value)
    settings = CacheLayout(cache).shards_dir / "settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "separation": "htdemucs"}))
    with pytest.raises(DataError, match="--separate"):
        tokenize_cache(cache, work["corpus"], work["extractor"], k=K, progress=False)


def test_dataset_serves_tokens_of_the_latent_crop_by_time(work):
    cache = work["cache"]
    plain = LatentCropDataset(cache, 64)
    dataset = LatentCropDataset(cache, 64, semantic_tokens=True)
    ratio = RS / CodecInfo.load(CacheLayout(cache).codec_file).frame_rate
    frames = round(64 * RS / RC)
    assert dataset.semantic_frames == frames == 37
    main = load_from_disk(str(CacheLayout(cache).dataset_dir)).with_format("numpy")
    stored = columns(cache)
    for epoch in (0, 1):
        plain.set_epoch(epoch), dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item, reference = dataset[index], plain[index]
            for key in ("latents", "vocal_latents", "frame_mask"):  # the same draws as without tokens
                assert torch.equal(item[key], reference[key])
            assert item["caption"] == reference["caption"]
            row = main[index]
            starts = [s for s in range(int(row["num_frames"]) - 64 + 1)
                      if np.array_equal(row["latents"][:, s : s + 64].astype(np.float32), item["latents"].numpy())]
            rng = np.random.default_rng([0, epoch, index])
            start = int(rng.integers(0, int(row["num_frames"]) - 64 + 1))
            assert start in starts
            first = math.floor(start * ratio)
            assert item["semantic"].shape == item["vocal_semantic"].shape == item["semantic_mask"].shape == (frames,)
            assert item["semantic"].dtype == torch.long and item["semantic_mask"].all()
            assert torch.equal(item["semantic"], torch.from_numpy(stored["semantic"][index, first : first + frames].astype(np.int64)))
            assert torch.equal(item["vocal_semantic"],
                               torch.from_numpy(stored["vocal_semantic"][index, first : first + frames].astype(np.int64)))

    long = LatentCropDataset(cache, 160, semantic_tokens=True)  # longer than the 87-frame tails
    assert long.semantic_frames == round(160 * RS / RC) == 93
    for index in range(len(long)):
        item = long[index]
        real = min(93, round(min(160, int(main[index]["num_frames"])) * ratio), int(stored["num_semantic_frames"][index]))
        assert int(item["semantic_mask"].sum()) == real and (item["semantic"][real:] == 0).all()
    assert sorted({int(long[i]["semantic_mask"].sum()) for i in range(len(long))}) == [50, 93]

    batch = collate_latent_batch([dataset[0], dataset[3]])
    assert batch["semantic"].shape == batch["vocal_semantic"].shape == batch["semantic_mask"].shape == (2, frames)
    assert "semantic" not in collate_latent_batch([plain[0]])


def test_dataset_without_tokens_names_the_command(work, tmp_path):
    cache = copy_of(work, "untokenized")
    shutil.rmtree(CacheLayout(cache).semantic_dir)
    with pytest.raises(DataError, match="no semantic tokens.*discodiff tokenize"):
        LatentCropDataset(cache, 64, semantic_tokens=True)
    LatentCropDataset(cache, 64)


def test_cli_tokenizes_end_to_end(work):
    cache = copy_of(work, "cli")
    shutil.rmtree(CacheLayout(cache).semantic_dir)
    base = ["tokenize", str(cache), "--stems", str(work["corpus"]), "--features", "hubert", "--model", str(work["hubert"]),
            "--layer", "1", "--k", str(K), "--quiet"]
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    assert "6 windows from 2 tracks at 50 Hz" in result.output and "k=8" in result.output
    assert all(np.array_equal(columns(cache)[n], columns(work["cache"])[n]) for n in ("semantic", "vocal_semantic"))
    info = json.loads(CacheLayout(cache).semantic_info_file.read_text())
    assert info["source"] == {"kind": "hubert", "id": str(work["hubert"]), "layer": 1}

    result = runner.invoke(app, [*base[:-2], "4", "--quiet"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = runner.invoke(app, [*base, "--stems", str(work["root"] / "nowhere")])
    assert result.exit_code == 1 and "error:" in result.output and "nowhere" in result.output
    result = runner.invoke(app, [*base, "--features", "wav2vec"])
    assert result.exit_code == 1 and "--features" in result.output
