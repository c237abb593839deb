"""SSL frame features (HuBERT / MERT through transformers) on a tiny random HuBERT: shapes, frame rate, loading."""

from __future__ import annotations

import math

import pytest
import torch

from discodiff.conditioning.semantic import FeatureExtractor, SemanticTokenizer
from discodiff.conditioning.ssl import SSL_KINDS, SSLFeatures, build_tiny_hubert, load_ssl_features
from discodiff.codec import build_tiny_codec
from discodiff.conditioning import ConditionerNotFoundError
from discodiff.errors import AudioError, ConditioningError, ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread

RATE = 16000


def signal(seconds: float = 1.0, batch: int = 2) -> torch.Tensor:
    """``[batch, 1, T]``: a 220 Hz tone and white noise (then more tones), at 16 kHz."""
    samples = int(seconds * RATE)
    time = torch.arange(samples) / RATE
    noise = 0.3 * torch.randn(samples, generator=torch.Generator().manual_seed(0))
    rows = [0.5 * torch.sin(2 * math.pi * 220.0 * time), noise]
    rows += [0.4 * torch.sin(2 * math.pi * 110.0 * (i + 3) * time) for i in range(batch - 2)]
    return torch.stack(rows[:batch])[:, None]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_hubert")
    build_tiny_hubert(seed=0).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def extractor(tiny_dir) -> SSLFeatures:
    return load_ssl_features("hubert", tiny_dir, layer=1)


def test_loaded_extractor_shape_frames_and_protocol(extractor):
    assert isinstance(extractor, FeatureExtractor)
    assert (extractor.sample_rate, extractor.frame_rate, extractor.dim) == (RATE, 50.0, 32)
    assert extractor.layer == 1 and not extractor.normalize  # HuBERT base: raw waveform, no preprocessor config
    for seconds in (1.0, 0.37):
        audio = signal(seconds)
        features = extractor(audio)
        frames = extractor.frames_for(audio.shape[-1])
        assert features.shape == (2, frames, 32) and features.dtype == torch.float32
        assert frames == int(extractor.model._get_feat_extract_output_lengths(audio.shape[-1]))
        assert abs(frames - extractor.frame_rate * seconds) <= 1  # the conv stack drops at most a frame
    assert extractor(torch.zeros(1, 1, extractor.min_samples)).shape == (1, 1, 32)


def test_features_are_the_requested_hidden_state_and_deterministic(extractor):
    audio = signal()
    with torch.inference_mode():
        hidden = extractor.model(audio[:, 0], output_hidden_states=True).hidden_states
    assert len(hidden) == 3  # the input of layer 1, then the outputs of layers 1 and 2
    assert torch.equal(extractor(audio), hidden[1])
    assert torch.equal(extractor(audio), extractor(audio))
    torch.testing.assert_close(extractor(audio[1:]), extractor(audio)[1:])  # examples do not see each other
    assert not torch.equal(SSLFeatures(extractor.model, 2, RATE)(audio), hidden[1])


def test_long_inputs_run_in_windows_on_the_whole_signals_frame_grid(extractor):
    """Past chunk_seconds the input runs in windows of that many frames: exactly frames_for(T) frames for any T; each
    window's frames are those the model gives for that window's samples alone, on the whole signal's frame grid (the
    first window is the start of the whole-signal pass's input); an input within one window is the whole pass."""
    model = extractor.model
    whole = SSLFeatures(model, 1, RATE, chunk_seconds=None)
    chunked = SSLFeatures(model, 1, RATE, chunk_seconds=0.2)  # 10 frames at 50 Hz
    assert chunked.chunk_frames == 10 and whole.chunk_frames is None
    for seconds in (0.21, 0.5, 0.61, 1.0):
        audio = signal(seconds)
        assert chunked(audio).shape == (2, whole.frames_for(audio.shape[-1]), 32), seconds
    audio = signal(1.0)
    out = chunked(audio)
    hop, need = chunked.hop_length, chunked.min_samples
    total = whole.frames_for(audio.shape[-1])
    assert total == 49
    for first in (0, 10, 40):  # the last window holds the 9 frames left
        last = min(first + 10, total)
        window = audio[..., first * hop : (last - 1) * hop + need]
        torch.testing.assert_close(out[:, first:last], whole(window), rtol=0, atol=0)
    assert not torch.equal(out, whole(audio))  # the transformer saw windows, not the whole second
    short = signal(0.19)
    assert torch.equal(chunked(short), whole(short))
    for bad in (0, -1.0, float("nan"), True, "30"):
        with pytest.raises(ConfigError, match="chunk_seconds as a positive number"):
            SSLFeatures(model, 1, RATE, chunk_seconds=bad)


def test_frame_rate_comes_from_the_conv_strides():
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                          conv_dim=(8, 8, 8), conv_stride=(5, 2, 3), conv_kernel=(10, 3, 3),
                          num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    model = HubertModel(config)
    for rate in (16000, 24000):
        features = SSLFeatures(model, 1, rate)
        assert features.hop_length == math.prod(config.conv_stride) == 30
        assert features.frame_rate == rate / 30
    audio = torch.randn(1, 1, 3000)
    assert SSLFeatures(model, 0, RATE)(audio).shape == (1, SSLFeatures(model, 0, RATE).frames_for(3000), 16)


def test_description_pins_kind_layer_and_weights(extractor):
    same = SSLFeatures(build_tiny_hubert(seed=0), 1, RATE, name="hubert")
    other = SSLFeatures(build_tiny_hubert(seed=1), 1, RATE, name="hubert")
    assert same.description == extractor.description  # the same weights, loaded or built
    assert extractor.description.startswith("ssl-features hubert layer=1 sr=16000 normalize=False chunk_frames=1500 sha256=")
    assert other.description != extractor.description
    assert SSLFeatures(extractor.model, 1, RATE, name="hubert", chunk_seconds=None).description != extractor.description
    assert SSLFeatures(extractor.model, 2, RATE, name="hubert").description != extractor.description


def test_normalize_follows_the_preprocessor_config(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    # layer norms over channels, not a group norm over time: gain and offset change the features
    build_tiny_hubert(seed=0, feat_extract_norm="layer").save_pretrained(str(tmp_path))
    preprocessor = Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True)
    preprocessor.save_pretrained(str(tmp_path))
    mert = load_ssl_features("mert", tmp_path, layer=2)  # model_type hubert: a HubertModel, no remote code
    assert (mert.sample_rate, mert.frame_rate, mert.normalize, mert.layer) == (24000, 75.0, True, 2)
    assert "ssl-features mert layer=2 sr=24000 normalize=True" in mert.description
    audio = 3.0 * signal() + 0.1
    inputs = preprocessor([row.numpy() for row in audio[:, 0]], sampling_rate=24000, return_tensors="pt")
    with torch.inference_mode():
        for normalize, values in ((True, inputs.input_values), (False, audio[:, 0])):
            expected = mert.model(values, output_hidden_states=True).hidden_states[2]
            features = load_ssl_features("mert", tmp_path, layer=2, normalize=normalize)
            torch.testing.assert_close(features(audio), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(features(audio), mert(audio), atol=1e-2)
    assert load_ssl_features("mert", tmp_path, layer=2, sample_rate=16000).frame_rate == 50.0


def test_resample_to_the_model_rate(extractor):
    audio = signal(0.5)
    slow = extractor.resample(audio[..., ::2].contiguous(), 8000)
    assert slow.shape == (2, 1, audio.shape[-1]) and slow.dtype == torch.float32
    assert torch.equal(extractor.resample(audio, RATE), audio)
    assert extractor(slow).shape == extractor(audio).shape


def test_semantic_tokenizer_on_ssl_features(extractor):
    audio = signal(1.0)
    features = extractor(audio)
    tokenizer = SemanticTokenizer.fit([features], k=4, seed=0, batch_size=64, extractor=extractor)
    assert tokenizer.frame_rate == 50.0 and tokenizer.description == extractor.description
    tokens = tokenizer.tokenize(extractor, audio)
    assert tokens.shape == features.shape[:2] and tokens.dtype == torch.long
    assert torch.equal(tokens, tokenizer.assign(features))
    assert set(tokens.unique().tolist()) <= set(range(4))
    with pytest.raises(ConfigError, match="this tokenizer was fitted on features of"):
        tokenizer.tokenize(SSLFeatures(build_tiny_hubert(seed=1), 1, RATE, name="hubert"), audio)


def test_defaults_of_the_anchors():
    assert (SSL_KINDS["hubert"].id, SSL_KINDS["hubert"].layer, SSL_KINDS["hubert"].sample_rate) == \
        ("facebook/hubert-base-ls960", 9, 16000)
    assert (SSL_KINDS["mert"].id, SSL_KINDS["mert"].layer, SSL_KINDS["mert"].sample_rate) == \
        ("m-a-p/MERT-v1-95M", 7, 24000)


def test_named_errors(extractor, tiny_dir, tmp_path):
    for kind in SSL_KINDS:
        with pytest.raises(ConditionerNotFoundError, match="'nobody/not-a-model' could not be loaded") as error:
            load_ssl_features(kind, "nobody/not-a-model")
        assert "\n" not in str(error.value) and "local save_pretrained directory" in str(error.value)
    with pytest.raises(ConfigError, match=r"layer as an integer in 0…2 \(hidden_states of a 2-layer model"):
        load_ssl_features("hubert", tiny_dir)  # the default layer 9 of HuBERT base
    for layer in (-1, 3, 1.0, True):
        with pytest.raises(ConfigError, match="layer as an integer in 0…2"):
            SSLFeatures(extractor.model, layer, RATE)
    with pytest.raises(ConfigError, match="sample_rate as a positive integer"):
        SSLFeatures(extractor.model, 1, 0)
    with pytest.raises(ConfigError, match="HuBERT-like transformers model"):
        SSLFeatures(torch.nn.Linear(2, 2), 1, RATE)
    with pytest.raises(ConfigError, match="unknown SSL feature kind 'wavlm'"):
        load_ssl_features("wavlm", tiny_dir)
    codec_dir = build_tiny_codec(seed=0).save_pretrained(tmp_path / "codec")
    with pytest.raises(ConfigError, match="holds a 'dac' model, not a HuBERT model"):
        load_ssl_features("hubert", codec_dir)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((tiny_dir / "config.json").read_text())  # no weights
    with pytest.raises(ConditioningError, match=f"{damaged}: hubert weights cannot be loaded"):
        load_ssl_features("hubert", damaged, layer=1)
    with pytest.raises(ConfigError, match=r"mono float audio \[B, 1, T\], got \(2, 16000\)"):
        extractor(signal()[:, 0])
    with pytest.raises(AudioError, match="shorter than the 325 samples"):
        extractor(torch.zeros(1, 1, 324))
