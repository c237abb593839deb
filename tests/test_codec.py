"""DacCodec on tiny random codecs: snapping, partial codebooks, chunking, both backends, errors."""

import importlib.util
from pathlib import Path

import pytest
import torch

from discodiff.codec import CodecNotFoundError, DacCodec, build_tiny_codec, load_codec
from conftest import tone

# Chunked (overlap-discard, 0.5 s context) vs whole-signal processing on the tiny codec: measured
# max |difference| 3.7e-9 for latents and 1.6e-9 for audio (signal peak ~4e-3) — float rounding.
CHUNK_ATOL = 1e-6


def batch(seconds=2.0, n=2):
    return torch.stack([tone(seconds, seed=i) for i in range(n)])


@pytest.mark.parametrize("codec_fixture", ["tiny_codec", "tiny_codec_k4d4"])
def test_snapping_encoder_latents_gives_encoder_codes(request, codec_fixture):
    codec = request.getfixturevalue(codec_fixture)
    audio = batch()
    latents, codes = codec.encode_with_codes(audio, chunk_seconds=None)
    K, d = codec.n_codebooks, codec.codebook_dim
    assert latents.shape == (2, K * d, codec.frames_for(audio.shape[-1]))
    assert codes.shape == (2, K, latents.shape[-1]) and codes.dtype == torch.int64
    assert torch.equal(codec.snap(latents), codes)
    with torch.inference_mode():
        z_q_encoder = codec.model.quantizer(codec.model.encoder(torch.nn.functional.pad(audio, (0, latents.shape[-1] * codec.hop_length - audio.shape[-1]))))[0]
    assert (codec.embed_codes(codec.snap(latents)) - z_q_encoder).abs().max() < 1e-5


def test_partial_latents_snap_to_leading_codebooks(tiny_codec):
    latents, codes = tiny_codec.encode_with_codes(batch(1.0), chunk_seconds=None)
    d = tiny_codec.codebook_dim
    for k in (1, 3, tiny_codec.n_codebooks):
        assert torch.equal(tiny_codec.snap(latents[:, : k * d]), codes[:, :k])


def test_geometry_comes_from_config(tiny_codec, tiny_codec_k4d4):
    assert (tiny_codec.latent_channels, tiny_codec.hop_length, tiny_codec.sample_rate) == (72, 512, 44100)
    assert tiny_codec.frame_rate == pytest.approx(86.1328125)
    assert (tiny_codec_k4d4.n_codebooks, tiny_codec_k4d4.codebook_dim, tiny_codec_k4d4.latent_channels) == (4, 4, 16)


def test_decode_lengths(tiny_codec):
    audio = batch(1.3)
    latents = tiny_codec.encode(audio, chunk_seconds=None)
    assert tiny_codec.decode_latents(latents, chunk_seconds=None).shape == (2, 1, latents.shape[-1] * 512)
    assert tiny_codec.decode_latents(latents, length=audio.shape[-1]).shape == audio.shape
    primary_only = tiny_codec.decode_latents(latents[:, :8], length=audio.shape[-1])
    assert primary_only.shape == audio.shape and not torch.allclose(primary_only, tiny_codec.decode_latents(latents, length=audio.shape[-1]))


def test_chunked_matches_whole(tiny_codec):
    audio = batch(4.0)
    whole_latents, whole_codes = tiny_codec.encode_with_codes(audio, chunk_seconds=None)
    chunk_latents, chunk_codes = tiny_codec.encode_with_codes(audio, chunk_seconds=1.0, context_seconds=0.5, progress=False)
    assert (whole_latents - chunk_latents).abs().max() < CHUNK_ATOL
    assert torch.equal(whole_codes, chunk_codes)
    whole = tiny_codec.decode_codes(whole_codes, chunk_seconds=None)
    chunked = tiny_codec.decode_codes(whole_codes, chunk_seconds=1.0, context_seconds=0.5, progress=False)
    assert (whole - chunked).abs().max() < CHUNK_ATOL * max(1.0, whole.abs().max().item())


def test_chunking_without_context_has_seams(tiny_codec):
    """The overlap is what makes chunking exact: without it the seams differ (the test has teeth)."""
    codes = tiny_codec.encode_codes(batch(3.0), chunk_seconds=None)
    whole = tiny_codec.decode_codes(codes, chunk_seconds=None)
    seamy = tiny_codec.decode_codes(codes, chunk_seconds=1.0, context_seconds=0.0, progress=False)
    assert (whole - seamy).abs().max() > 100 * CHUNK_ATOL * whole.abs().max()


def test_always_eval(tiny_codec):
    tiny_codec.train()
    assert not tiny_codec.training and not tiny_codec.model.training
    assert not any(p.requires_grad for p in tiny_codec.parameters())


def test_bad_inputs_are_named(tiny_codec):
    with pytest.raises(ValueError, match="to_mono"):
        tiny_codec.encode(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="latents must be"):
        tiny_codec.snap(torch.zeros(1, 12, 5))
    with pytest.raises(ValueError, match="codes must be"):
        tiny_codec.embed_codes(torch.zeros(1, 10, 5, dtype=torch.long))


def test_save_and_load_directory(tiny_codec, tmp_path):
    loaded = DacCodec.from_pretrained(tiny_codec.save_pretrained(tmp_path / "codec"))
    audio = batch(0.5)
    assert torch.equal(loaded.encode_codes(audio), tiny_codec.encode_codes(audio))


def test_fingerprint_identifies_the_weights(tiny_codec, tmp_path):
    fingerprint = tiny_codec.fingerprint()
    assert len(fingerprint) == 64 and tiny_codec.fingerprint() is fingerprint  # computed once
    assert DacCodec.from_pretrained(tiny_codec.save_pretrained(tmp_path / "codec")).fingerprint() == fingerprint
    assert build_tiny_codec(seed=0).fingerprint() == fingerprint
    other = build_tiny_codec(seed=1)
    assert other.spec == tiny_codec.spec and other.fingerprint() != fingerprint


def test_tiny_id_is_one_fixed_codec(tiny_codec, tmp_path):
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    assert load_codec("tiny").fingerprint() == tiny_codec.fingerprint()
    assert load_codec("tiny", "descript").backend == "transformers"  # the tiny codec has one backend
    config = DiscoDiffConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    for seed in (0, 3):
        assert build_pipeline(config, seed=seed).codec.fingerprint() == tiny_codec.fingerprint()
    other = build_tiny_codec(seed=3).save_pretrained(tmp_path / "seed-3")  # `discodiff tiny-codec DIR --seed 3`
    assert load_codec(str(other)).fingerprint() == build_tiny_codec(seed=3).fingerprint() != tiny_codec.fingerprint()


def test_missing_weights_error_names_the_fix(tmp_path):
    with pytest.raises(CodecNotFoundError, match="--codec path/to/dir"):
        DacCodec.from_pretrained(tmp_path / "no-such-codec")
    with pytest.raises(CodecNotFoundError, match=r"\.pth"):
        DacCodec.from_pretrained(tmp_path / "missing.pth", backend="descript")
    with pytest.raises(ValueError, match="unknown codec backend"):
        DacCodec.from_pretrained(tmp_path, backend="encodec")


@pytest.fixture(scope="module")
def descript_pair(tmp_path_factory):
    """A tiny original-DAC checkpoint on disk and the same weights converted to transformers."""
    from discodiff.codec.convert import descript_to_transformers
    from discodiff.codec.tiny import build_tiny_descript_dac

    model = build_tiny_descript_dac(seed=3)
    with torch.no_grad():  # spread the codebooks so snapping is non-trivial, like trained DAC
        for q in model.quantizer.quantizers:
            q.codebook.weight.normal_(generator=torch.Generator().manual_seed(0))
    pth = tmp_path_factory.mktemp("dac") / "tiny.pth"
    model.save(str(pth), package=False)
    return pth, DacCodec.from_model(descript_to_transformers(model), backend="transformers")


def test_descript_backend_is_installed():
    """The descript backend must run here, not be skipped (see README, Design notes)."""
    assert importlib.util.find_spec("dac") is not None, "install with: bash scripts/install.sh --descript"


def test_backends_agree(descript_pair):
    pth, hf = descript_pair
    original = DacCodec.from_pretrained(pth, backend="descript")
    assert original.spec == hf.spec
    audio = batch(1.5)
    lat_o, codes_o = original.encode_with_codes(audio, chunk_seconds=None)
    lat_h, codes_h = hf.encode_with_codes(audio, chunk_seconds=None)
    assert (lat_o - lat_h).abs().max() < 1e-5
    assert (codes_o == codes_h).float().mean() > 0.999  # ties at 1e-7 may flip a rare code
    assert torch.equal(original.snap(lat_o), codes_o)
    out_o, out_h = original.decode_codes(codes_o), hf.decode_codes(codes_o)
    assert (out_o - out_h).abs().max() < 1e-5 * max(1.0, out_o.abs().max().item())


def test_descript_checkpoint_converts_to_directory(descript_pair, tmp_path):
    from discodiff.codec.convert import convert_descript_checkpoint

    pth, hf = descript_pair
    converted = DacCodec.from_pretrained(convert_descript_checkpoint(pth, tmp_path / "converted"))
    audio = batch(0.5)
    assert torch.equal(converted.encode_codes(audio), hf.encode_codes(audio))


def test_codebook_usage_measures_collapse_and_uniform_use():
    from discodiff.codec.usage import CodebookUsage

    collapsed = torch.zeros(2, 3, 50, dtype=torch.long)            # every frame of every codebook: entry 0
    uniform = torch.arange(8).repeat(2, 3, 5)                        # entries 0..7 equally often
    usage = CodebookUsage.empty(3, 8).update(collapsed)
    assert torch.allclose(usage.perplexity, torch.ones(3)) and torch.allclose(usage.used_share, torch.full((3,), 1 / 8))
    usage = CodebookUsage.empty(3, 8).update(uniform)
    assert torch.allclose(usage.perplexity, torch.full((3,), 8.0)) and usage.metrics()["codebook/used_min"] == 1.0
    padded = torch.full((1, 3, 4), -1)
    padded[0, :, 0] = 5
    usage = CodebookUsage.empty(3, 8).update(padded)
    assert usage.counts.sum() == 3 and usage.counts[:, 5].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"must lie in \[0, 8\)"):
        usage.update(torch.full((1, 3, 2), 8))


def test_codebook_usage_of_a_random_codec_on_real_signal(tiny_codec):
    from discodiff.codec.usage import CodebookUsage

    codes = tiny_codec.encode_codes(tone(1.0)[None], progress=False)
    usage = CodebookUsage.empty(tiny_codec.n_codebooks, tiny_codec.spec.codebook_size).update(codes)
    assert (usage.perplexity >= 1).all() and (usage.used_share > 0).all()
