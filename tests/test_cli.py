import soundfile as sf
from safetensors.torch import load_file
from typer.testing import CliRunner

from discodiff.audio import save_audio
from discodiff.cli import app
from conftest import tone

runner = CliRunner()


def test_codec_round_trip_through_cli(tiny_codec, tmp_path):
    codec_dir = tiny_codec.save_pretrained(tmp_path / "codec")
    wav = save_audio(tmp_path / "in.wav", tone(1.0, sample_rate=22050), sample_rate=22050)  # resampled on load

    result = runner.invoke(app, ["encode", str(wav), str(tmp_path / "z.safetensors"), "--codec", str(codec_dir)])
    assert result.exit_code == 0, result.output
    tensors = load_file(tmp_path / "z.safetensors")
    assert tensors["latents"].shape == (1, 72, 87) and tensors["codes"].shape == (1, 9, 87)

    result = runner.invoke(app, ["reconstruct", str(wav), str(tmp_path / "out.wav"), "--codec", str(codec_dir)])
    assert result.exit_code == 0, result.output
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == 44100 and out.shape == (44100,)


def test_bad_input_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["reconstruct", str(tmp_path / "missing.wav"), str(tmp_path / "o.wav")])
    assert result.exit_code == 1
    assert "missing.wav: no such file" in result.output


def test_missing_codec_names_local_path_option(tmp_path):
    wav = save_audio(tmp_path / "in.wav", tone(0.5))
    result = runner.invoke(app, ["encode", str(wav), str(tmp_path / "z.safetensors"), "--codec", "descript/dac_44khz"])
    assert result.exit_code == 1
    assert "descript/dac_44khz" in result.output and "--codec path/to/dir" in result.output


def test_info_lists_backends():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0 and "descript (installed)" in result.output and "device:" in result.output
