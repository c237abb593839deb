import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from discodiff import audio
from conftest import tone


def write(path, x, sr=44100, **kw):
    sf.write(str(path), x, sr, **kw)
    return path


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_formats_load_as_float_mono(tmp_path, fmt):
    x = tone(0.5).numpy()[0]
    p = write(tmp_path / f"a.{fmt}", np.stack([x, 0.5 * x], axis=1))
    y = audio.load_audio(p)
    assert y.dtype == torch.float32 and y.shape[0] == 1
    assert abs(y.shape[1] - x.size) <= 2048  # lossy codecs may pad a frame
    assert y.abs().max() <= 1.0


def test_keep_channels_and_mixdown(tmp_path):
    x = tone(0.2).numpy()[0]
    p = write(tmp_path / "s.wav", np.stack([x, np.zeros_like(x)], axis=1), subtype="FLOAT")
    stereo = audio.load_audio(p, mono=False)
    mono = audio.load_audio(p)
    assert stereo.shape[0] == 2
    torch.testing.assert_close(mono[0], stereo.mean(0))


def test_resample_to_44k1(tmp_path):
    p = write(tmp_path / "a.wav", tone(1.0, sample_rate=16000).numpy()[0], sr=16000)
    y = audio.load_audio(p)
    assert y.shape[1] == 44100
    spectrum = np.abs(np.fft.rfft(y[0].numpy()))
    assert abs(np.argmax(spectrum) - 220) <= 2  # 1 s window -> 1 Hz bins; the chord's 220 Hz survives


def test_missing_file(tmp_path):
    with pytest.raises(audio.AudioNotFoundError, match="nope.wav"):
        audio.load_audio(tmp_path / "nope.wav")


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(audio.AudioDecodeError, match="bad.wav"):
        audio.load_audio(p)


def test_zero_length(tmp_path):
    p = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(audio.EmptyAudioError, match="empty.wav"):
        audio.load_audio(p)


def test_nan_samples(tmp_path):
    x = tone(0.1).numpy()[0]
    x[100] = np.nan
    p = write(tmp_path / "nan.wav", x, subtype="FLOAT")
    with pytest.raises(audio.NonFiniteAudioError, match="nan.wav"):
        audio.load_audio(p)


def test_too_short(tmp_path):
    p = write(tmp_path / "short.wav", tone(0.1).numpy()[0])
    with pytest.raises(audio.AudioTooShortError, match="short.wav"):
        audio.load_audio(p, min_seconds=1.0)


def test_silence_warns_not_raises(tmp_path):
    p = write(tmp_path / "quiet.wav", np.zeros(4410, np.float32))
    with pytest.warns(audio.SilentAudioWarning, match="quiet.wav"):
        y = audio.load_audio(p)
    assert y.shape == (1, 4410)


def test_loudness_normalisation_hits_target():
    import pyloudnorm

    x = tone(3.0) * 0.05
    y = audio.normalize_loudness(x, 44100, target_lufs=-20.0)
    measured = pyloudnorm.Meter(44100).integrated_loudness(y[0].double().numpy())
    assert abs(measured - -20.0) < 0.1


def test_save_round_trip(tmp_path):
    x = tone(0.3)
    p = audio.save_audio(tmp_path / "sub" / "o.wav", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = audio.load_audio(p)
    assert (y - x).abs().max() < 1e-4  # 16-bit PCM quantisation
