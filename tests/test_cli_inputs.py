"""A battery of bad and odd inputs for every command: each ends in one line naming the input, before any work,
with a non-zero exit status, no traceback, and nothing already written lost or replaced."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from discodiff.audio import save_audio
from discodiff.cli import app
from conftest import tone

TINY_CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *needles: str) -> str:
    """The single ``error:`` line of a failed command (exit 1) that names every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def usage_error(result, option: str) -> None:
    """A rejected option value (exit 2) whose message names the option and its range."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"Invalid value for '{option}'" in result.output, result.output


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    result = invoke("new-model", root / "model", "--config", TINY_CONFIG)
    assert result.exit_code == 0, result.output
    save_audio(root / "vocal.wav", tone(1.0))
    return root


@pytest.fixture
def vocal(workspace):
    return workspace / "vocal.wav"


@pytest.fixture
def model(workspace):
    return workspace / "model"


# --- 1. outputs are checked before the work starts -----------------------------------------------

@pytest.mark.parametrize("name, needle", [
    ("/proc/discodiff/out.wav", "cannot write in /proc"),
    ("no_suffix", "has no suffix"),
    ("out.mp4", "has '.mp4'"),
    ("a_folder", "is a folder"),
    ("a_file.wav/out.wav", "is a file, not a folder"),
])
def test_unusable_audio_outputs_fail_before_loading_anything(tmp_path, vocal, name, needle):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file.wav").write_bytes(b"x")
    out = name if name.startswith("/") else tmp_path / name
    # the codec does not exist: reaching it would be a different error, so the output was checked first
    one_error_line(invoke("reconstruct", vocal, out, "--codec", tmp_path / "no_codec"), str(out), needle)
    one_error_line(invoke("sample", "--model", tmp_path / "no_model", "--prompt", "x", "--out", out), needle)


def test_output_may_not_be_an_input(vocal, model):
    before = vocal.read_bytes()
    one_error_line(invoke("reconstruct", vocal, vocal, "--codec", model / "codec"), "is also an input")
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--vocal", vocal, "--out", vocal), "is also an input")
    assert vocal.read_bytes() == before


@pytest.mark.parametrize("command", [
    ["encode", "{vocal}", "{out}.wav"],
    ["encode", "{vocal}", "/proc/z.safetensors"],
    ["new-model", "/proc/model", "--config", TINY_CONFIG],
    ["tiny-codec", "{file}"],
    ["prepare", "{tmp}", "--out", "/proc/cache", "--codec", "tiny"],
    ["render-corpus", "--out", "/proc/rendered", "--seconds", "1"],
])
def test_unusable_outputs_of_every_command(tmp_path, vocal, command):
    (tmp_path / "file").write_bytes(b"x")
    args = [a.format(vocal=vocal, out=tmp_path / "z", file=tmp_path / "file", tmp=tmp_path) for a in command]
    line = one_error_line(invoke(*args))
    assert "/proc" in line or "file" in line or ".safetensors" in line


def test_full_disk_is_refused_before_the_work(monkeypatch, tmp_path, vocal, model):
    import shutil

    from discodiff import outputs

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    one_error_line(invoke("reconstruct", vocal, tmp_path / "out.wav", "--codec", model / "codec"), "free", "needed")
    assert not list(tmp_path.iterdir())


def test_disk_filling_up_while_writing_keeps_the_earlier_file(monkeypatch, tmp_path, vocal, model):
    out = tmp_path / "out.wav"
    out.write_bytes(b"earlier result")

    def full_disk(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sf, "write", full_disk)
    one_error_line(invoke("reconstruct", vocal, out, "--codec", model / "codec", "--quiet"), "No space left on device",
                   "free some space")
    assert out.read_bytes() == b"earlier result" and sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


# --- 2. numbers are range-checked --------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["--steps", "0"], "--steps"), (["--steps", "-3"], "--steps"), (["--steps", "100000"], "--steps"),
    (["--duration", "0"], "--duration"), (["--duration", "-1"], "--duration"), (["--duration", "10000"], "--duration"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**80)], "--seed"),
    (["--text-guidance", "-1"], "--text-guidance"), (["--vocal-guidance", "1e9"], "--vocal-guidance"),
    (["--prompts-file", "missing.txt"], "--prompts-file"),
])
def test_sample_numbers_out_of_range(model, args, option):
    usage_error(invoke("sample", "--model", model, *(["--prompt", "x"] if "--prompts-file" not in args else []), *args), option)


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"])
def test_empty_prompts_file(tmp_path, model, content):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(content)
    one_error_line(invoke("sample", "--model", model, "--prompts-file", prompts), str(prompts), "no prompts")


@pytest.mark.parametrize("command, option", [
    (["reconstruct", "{vocal}", "{tmp}/o.wav", "--chunk-seconds", "0"], "--chunk-seconds"),
    (["encode", "{vocal}", "{tmp}/o.safetensors", "--chunk-seconds", "-1"], "--chunk-seconds"),
    (["prepare", "{tmp}", "--out", "{tmp}/c", "--window-seconds", "0"], "--window-seconds"),
    (["prepare", "{tmp}", "--out", "{tmp}/c", "--workers", "0"], "--workers"),
    (["render-corpus", "--out", "{tmp}/r", "--workers", "0"], "--workers"),
    (["render-corpus", "--out", "{tmp}/r", "--seconds", "-1"], "--seconds"),
    (["tiny-codec", "{tmp}/c", "--seed", "-1"], "--seed"),
])
def test_numbers_of_other_commands(tmp_path, vocal, command, option):
    usage_error(invoke(*[a.format(vocal=vocal, tmp=tmp_path) for a in command]), option)


@pytest.mark.parametrize("override, needle", [
    ("sampling.num_inference_steps=0", "sampling.num_inference_steps must be in [1, 1000], got 0"),
    ("sampling.duration=-1", "sampling.duration must be in (0, 600], got -1.0"),
    ("primary.block_channels=0.9", "primary.block_channels must be a list of int"),
    ("sampling.scheduler=fast", "sampling.scheduler must be one of"),
    ("nonsense", "is not key=value"),
])
def test_new_model_config_values_are_checked_before_building(tmp_path, override, needle):
    one_error_line(invoke("new-model", tmp_path / "m", "--config", TINY_CONFIG, "--set", override), needle)
    assert not (tmp_path / "m").exists()


# --- 4. existing work is protected --------------------------------------------------------------------

def test_new_model_never_replaces_work_unless_told(tmp_path):
    model_dir = tmp_path / "model"
    assert invoke("new-model", model_dir, "--config", TINY_CONFIG).exit_code == 0
    before = digest(model_dir)
    one_error_line(invoke("new-model", model_dir, "--config", TINY_CONFIG, "--seed", "1"), str(model_dir), "--overwrite")
    assert digest(model_dir) == before
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"jpeg")
    for extra in ([], ["--overwrite"]):
        one_error_line(invoke("new-model", unrelated, "--config", TINY_CONFIG, *extra), "non-empty folder")
    assert sorted(p.name for p in unrelated.iterdir()) == ["holiday.jpg"]
    assert invoke("new-model", model_dir, "--config", TINY_CONFIG, "--seed", "1", "--overwrite").exit_code == 0
    assert digest(model_dir) != before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tiny_codec_never_replaces_a_codec_unless_told(tmp_path):
    assert invoke("tiny-codec", tmp_path / "codec").exit_code == 0
    before = digest(tmp_path / "codec")
    one_error_line(invoke("tiny-codec", tmp_path / "codec", "--seed", "3"), "--overwrite")
    assert digest(tmp_path / "codec") == before
    assert invoke("tiny-codec", tmp_path / "codec", "--seed", "3", "--overwrite").exit_code == 0
    assert digest(tmp_path / "codec") != before


# --- 7. odd but legal inputs -----------------------------------------------------------------------

def test_codec_commands_take_the_tiny_codec_id(tmp_path, vocal):
    from safetensors.torch import load_file

    from discodiff.audio import read_audio
    from discodiff.codec import build_tiny_codec

    result = invoke("encode", vocal, tmp_path / "o.safetensors", "--codec", "tiny", "--quiet")
    assert result.exit_code == 0, result.output
    audio, _ = read_audio(vocal, mono=True)
    expected = build_tiny_codec(seed=0).encode_codes(audio[None], progress=False)  # the one fixed tiny codec
    assert torch.equal(load_file(tmp_path / "o.safetensors")["codes"], expected)
    assert invoke("reconstruct", vocal, tmp_path / "o.wav", "--codec", "tiny", "--quiet").exit_code == 0


def test_folder_named_like_an_audio_file(tmp_path, model):
    (tmp_path / "take.wav").mkdir()
    one_error_line(invoke("reconstruct", tmp_path / "take.wav", tmp_path / "o.wav", "--codec", model / "codec"), "is a folder")


def test_truncated_wav_is_refused(tmp_path, vocal, model):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(vocal.read_bytes()[: vocal.stat().st_size // 2])
    one_error_line(invoke("reconstruct", cut, tmp_path / "o.wav", "--codec", model / "codec"), str(cut), "truncated")


def test_clipped_float_input_warns(tmp_path, model):
    loud = tmp_path / "loud.wav"
    sf.write(loud, (3.0 * np.sin(np.arange(44100) / 20.0)).astype(np.float32), 44100, subtype="FLOAT")
    result = invoke("reconstruct", loud, tmp_path / "o.wav", "--codec", model / "codec", "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "peak 3.00 is beyond full scale" in result.output


def test_mix_needs_a_vocal_and_duration_conflicts_with_it(tmp_path, vocal, model):
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--out", tmp_path / "a.wav", "--mix", tmp_path / "m.wav"),
                   "--mix needs --vocal")
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--vocal", vocal, "--duration", "3"), "drop --duration")
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--vocal", vocal, "--out", tmp_path / "a.wav",
                          "--mix", tmp_path / "a.wav"), "different names")
    one_error_line(invoke("sample", "--model", model, "--prompt", "  "), "--prompt is empty")
    assert not list(tmp_path.iterdir())


def test_sample_writes_accompaniment_and_mix(tmp_path, vocal, model):
    result = invoke("sample", "--model", model, "--prompt", "x", "--vocal", vocal, "--out", tmp_path / "a.wav",
                    "--mix", tmp_path / "m.wav", "--spectrogram", tmp_path / "s.png", "--steps", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "it/s" not in result.output and "%|" not in result.output  # --quiet silences the libraries' bars too
    for name in ("a.wav", "m.wav"):
        audio, rate = sf.read(tmp_path / name)
        assert rate == 44100 and audio.shape == (44100,)
    from PIL import Image

    from discodiff.spectrogram import LABEL_HEIGHT

    with Image.open(tmp_path / "s.png") as picture:  # vocal, accompaniment and mix: 513 bins each under a label
        assert picture.size == (1 + 44100 // 256, 3 * (513 + LABEL_HEIGHT))
        rows = np.asarray(picture).reshape(3, 513 + LABEL_HEIGHT, -1)[:, LABEL_HEIGHT:]
    assert all(panel.std() > 0 for panel in rows)  # three real spectrograms, not blank panels


def test_sample_spectrogram_must_be_a_png_apart_from_the_audio(tmp_path, vocal, model):
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--spectrogram", tmp_path / "s.jpg"), "ending in .png")
    one_error_line(invoke("sample", "--model", model, "--prompt", "x", "--out", tmp_path / "a.wav",
                          "--spectrogram", tmp_path / "a.wav"), "ending in .png")
    assert not list(tmp_path.iterdir())


# --- 8. help ---------------------------------------------------------------------------------------

def test_help_shows_the_workflow_ranges_and_extras():
    top = invoke("--help").output
    assert "Workflow" in top and "discodiff sample --model" in top and "Thin:" not in top
    sample_help = invoke("sample", "--help").output
    assert "1<=x<=1000" in sample_help and "needs" in sample_help and "--vocal" in sample_help
    assert "discodiff[dac]" in invoke("convert-codec", "--help").output.replace("\n", "").replace(" ", "")
