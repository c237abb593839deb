import pytest
import torch

from discodiff.latents import LatentStats, merge_latents, split_latents


def test_split_merge_round_trip():
    x = torch.randn(2, 72, 10)
    primary, secondary = split_latents(x, primary_channels=8)
    assert primary.shape == (2, 8, 10) and secondary.shape == (2, 64, 10)
    assert torch.equal(merge_latents(primary, secondary), x)
    primary, secondary = split_latents(x, primary_channels=24)  # P = 3 codebooks of 8
    assert primary.shape == (2, 24, 10) and torch.equal(secondary, x[:, 24:])


def test_split_rejects_bad_shape():
    with pytest.raises(ValueError, match="more than the 72 primary channels"):
        split_latents(torch.randn(2, 72, 10), primary_channels=72)
    with pytest.raises(ValueError, match="\\[B, C, L\\]"):
        split_latents(torch.randn(72, 10), primary_channels=8)


@pytest.mark.parametrize("per", ["codebook", "channel"])
def test_fit_streaming_matches_full_data(per):
    g = torch.Generator().manual_seed(0)
    scale = torch.arange(1, 13, dtype=torch.float32).repeat_interleave(4)[:, None]  # K=12, d=4
    batches = [torch.randn(3, 48, 17, generator=g) * scale + 5 for _ in range(4)]
    stats = LatentStats.fit(batches, codebook_dim=4, per=per)
    data = torch.cat(batches).double()
    if per == "codebook":
        grouped = data.transpose(0, 1).reshape(12, -1)  # [K, d*B*L]: codebook k owns channels 4k..4k+3
    else:
        grouped = data.transpose(0, 1).reshape(48, -1)
    torch.testing.assert_close(stats.mean, grouped.mean(1))
    torch.testing.assert_close(stats.std, grouped.std(1, unbiased=False))
    normed = stats.normalize(torch.cat(batches))
    assert normed.mean().abs() < 1e-4 and (normed.std() - 1).abs() < 1e-2


def test_normalize_inverse_and_channel_offset():
    stats = LatentStats(torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 0.5, 4.0]), codebook_dim=2)
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(stats.denormalize(stats.normalize(x)), x)
    secondary = x[:, 2:]
    torch.testing.assert_close(stats.normalize(secondary, channel_offset=2), stats.normalize(x)[:, 2:])
    with pytest.raises(ValueError, match="exceed"):
        stats.normalize(torch.randn(1, 6, 3), channel_offset=2)


def test_save_load_is_exact(tmp_path):
    stats = LatentStats.fit([torch.randn(4, 16, 33)], codebook_dim=8)
    loaded = LatentStats.load(stats.save(tmp_path / "stats.json"))
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)
    assert (loaded.codebook_dim, loaded.per) == (8, "codebook")


def test_rejects_non_positive_std():
    with pytest.raises(ValueError, match="std"):
        LatentStats(torch.zeros(2), torch.tensor([1.0, 0.0]), codebook_dim=8)
