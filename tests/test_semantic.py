"""The AR family's semantic tokenizer: codec frame features, SingSong's noisy featurisation, k-means tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from discodiff.conditioning.semantic import CodecFeatures, FeatureExtractor, SemanticTokenizer, noisy
from discodiff.conditioning.semantic import METADATA_KEY
from discodiff.codec import build_tiny_codec
from discodiff.errors import ConfigError

DIM = 6
CENTRES = 10.0 * torch.eye(4, DIM)  # four blobs, 10 apart per axis, σ = 0.5


def blobs(frames_per_blob: int = 100, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[2, L, DIM]`` drawn from the four blobs, shuffled, and their blob labels ``[2, L]``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(frames_per_blob)
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    points = CENTRES[labels] + 0.5 * torch.randn(labels.numel(), DIM, generator=generator)
    return points.reshape(2, -1, DIM), labels.reshape(2, -1)


@pytest.fixture(scope="module")
def fitted() -> SemanticTokenizer:
    features, _ = blobs()
    return SemanticTokenizer.fit([features[0], features[1:]], k=4, seed=0, batch_size=256,
                                 description="blobs", frame_rate=50.0)


@pytest.fixture(scope="module")
def codec():
    return build_tiny_codec(seed=0)


def test_fit_recovers_the_blobs_up_to_permutation(fitted):
    features, labels = blobs(seed=2)  # fresh draws of the same blobs
    tokens = fitted.assign(features)
    assert tokens.shape == labels.shape and tokens.dtype == torch.long
    mapping = {int(label): set(tokens[labels == label].tolist()) for label in range(4)}
    assert all(len(found) == 1 for found in mapping.values()), mapping
    assert len({found.pop() for found in mapping.values()}) == 4  # a bijection
    assert fitted.centroids.shape == (4, DIM) and fitted.centroids.dtype == torch.float32


def test_assign_equals_sklearn_predict():
    from sklearn.cluster import MiniBatchKMeans

    generator = torch.Generator().manual_seed(3)
    train = torch.randn(600, DIM, generator=generator)
    tokenizer = SemanticTokenizer.fit([train], k=16, seed=5, batch_size=128)
    reference = MiniBatchKMeans(n_clusters=16, batch_size=128, n_init=3, max_iter=100, random_state=5)
    reference.fit(train.numpy())
    np.testing.assert_array_equal(tokenizer.centroids.numpy(), reference.cluster_centers_.astype(np.float32))
    test = torch.randn(3, 500, DIM, generator=generator)
    expected = reference.predict(test.reshape(-1, DIM).numpy()).reshape(3, 500)
    for chunk in (7, 10_000):  # chunking over frames changes nothing
        np.testing.assert_array_equal(tokenizer.assign(test, chunk_frames=chunk).numpy(), expected)


def test_fit_is_deterministic_for_a_seed():
    features, _ = blobs()
    first = SemanticTokenizer.fit([features], k=8, seed=7, batch_size=64)
    again = SemanticTokenizer.fit([features], k=8, seed=7, batch_size=64)
    other = SemanticTokenizer.fit([features], k=8, seed=8, batch_size=64)
    assert torch.equal(first.centroids, again.centroids)
    assert not torch.equal(first.centroids, other.centroids)


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "semantic.safetensors")
    assert not list(tmp_path.glob(".*"))  # the temporary file of the atomic write is gone
    loaded = SemanticTokenizer.load(path)
    assert torch.equal(loaded.centroids, fitted.centroids)
    assert loaded.metadata == fitted.metadata == {"format": 1, "k": 4, "dim": DIM, "extractor": "blobs",
                                                  "frame_rate": 50.0}
    features, _ = blobs(seed=4)
    assert torch.equal(loaded.assign(features), fitted.assign(features))


def test_codec_features_shape_and_distinct_tokens(codec):
    extractor = CodecFeatures(codec, codebooks=1)
    assert isinstance(extractor, FeatureExtractor)
    assert extractor.dim == codec.codebook_dim and extractor.frame_rate == codec.frame_rate
    samples = codec.hop_length * 40
    time = torch.arange(samples) / codec.sample_rate
    tone = 0.5 * torch.sin(2 * math.pi * 220.0 * time)
    hiss = 0.5 * torch.randn(samples, generator=torch.Generator().manual_seed(0))
    audio = torch.stack([tone, hiss])[:, None]
    features = extractor(audio)
    assert features.shape == (2, codec.frames_for(samples), codec.codebook_dim) and features.dtype == torch.float32
    latents = codec.encode(audio, progress=False)
    assert torch.equal(features, latents[:, : codec.codebook_dim].transpose(1, 2))
    assert CodecFeatures(codec, codebooks=2)(audio).shape[-1] == 2 * codec.codebook_dim

    tokenizer = SemanticTokenizer.fit([features], k=4, seed=0, batch_size=64, extractor=extractor)
    assert tokenizer.frame_rate == codec.frame_rate and codec.fingerprint() in tokenizer.description
    tokens = tokenizer.tokenize(extractor, audio)
    assert torch.equal(tokens, tokenizer.assign(features))
    assert not torch.equal(tokens[0], tokens[1])
    # the tiny codec is untrained, so tone and hiss may share tokens, but hiss visits clusters the tone never does
    assert set(tokens[1].tolist()) - set(tokens[0].tolist())


def test_noisy_is_reproducible_with_the_requested_relative_std():
    audio = torch.stack([0.3 * torch.sin(torch.linspace(0, 2000, 48_000)), 0.01 * torch.ones(48_000)])[:, None]
    first = noisy(audio, 0.2, torch.Generator().manual_seed(11))
    again = noisy(audio, 0.2, torch.Generator().manual_seed(11))
    other = noisy(audio, 0.2, torch.Generator().manual_seed(12))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == audio.shape and first.dtype == audio.dtype
    rms = audio.pow(2).mean(dim=(1, 2)).sqrt()
    relative = (first - audio).std(dim=(1, 2)) / rms
    torch.testing.assert_close(relative, torch.full((2,), 0.2), rtol=0.02, atol=0)
    assert torch.equal(noisy(audio, 0.0, torch.Generator().manual_seed(1)), audio)
    silent = torch.zeros(1, 1, 100)
    assert torch.equal(noisy(silent, 0.5, torch.Generator().manual_seed(1)), silent)


def test_named_errors(fitted, tmp_path, codec):
    features, _ = blobs(frames_per_blob=2)  # 8 frames
    with pytest.raises(ConfigError, match="k as an integer ≥ 2"):
        SemanticTokenizer.fit([features], k=1)
    with pytest.raises(ConfigError, match="at least 9 feature frames, got 8"):
        SemanticTokenizer.fit([features], k=9)
    with pytest.raises(ConfigError, match="same extractor"):
        SemanticTokenizer.fit([features, torch.zeros(1, 5, DIM + 1)], k=2)
    with pytest.raises(ConfigError, match="dim 7 given to a tokenizer fitted on dim 6"):
        fitted.assign(torch.zeros(1, 3, DIM + 1))
    with pytest.raises(ConfigError, match="no semantic tokenizer file"):
        SemanticTokenizer.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError, match="not a semantic tokenizer"):
        SemanticTokenizer.load(garbage)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ConfigError, match=f"no '{METADATA_KEY}' metadata"):
        SemanticTokenizer.load(other)
    with pytest.raises(ConfigError, match="codebooks as an integer"):
        CodecFeatures(codec, codebooks=codec.n_codebooks + 1)
    with pytest.raises(ConfigError, match="std as a finite number"):
        noisy(torch.zeros(1, 1, 10), -0.1, torch.Generator())
