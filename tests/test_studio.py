"""The studio without a browser: run_studio on a tiny model (ranked candidates, their WAVs, mixes and spectrograms), the
gradio handlers (bad uploads become gradio errors with the CLI's message, a codec model is refused, the settings fill in
from the model), the page's slots and the `discodiff studio` command."""

from __future__ import annotations

import sys

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from discodiff.audio import mix_with_vocal, resample, save_audio
from discodiff.build import build_pipeline
from discodiff.cli import app
from discodiff.config import DiscoDiffConfig
from discodiff.errors import ConfigError, GenerationError
from discodiff.pipeline_utils import build_from_config, resolve_family
from discodiff.pretrained import shipped_model_dir
from discodiff.spectrogram import LABEL_HEIGHT
from discodiff.ui import MAX_STUDIO_CANDIDATES, StudioRequest, build_studio, run_studio
from discodiff.ui import studio as studio_module
from discodiff.ui.studio import family_options, model_handler, request_handler
from test_candidates import melody
from test_pipeline import randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 44100
TAKE_RATE = 22050  # the take is resampled to the model's rate
SPECTROGRAM_PANEL = 513 + LABEL_HEIGHT  # n_fft 1024 → 513 frequency rows, under a label strip
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pipe = build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml"), seed=0)
    randomize_(pipe.primary, 1)
    randomize_(pipe.secondary, 2)
    return pipe.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def codec_model(tmp_path_factory):
    return build_from_config("configs/codec/tiny.yaml", seed=0).save_pretrained(tmp_path_factory.mktemp("models") / "codec")


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    """One second of a sung-like line at 22.05 kHz."""
    path = tmp_path_factory.mktemp("takes") / "take.wav"
    save_audio(path, melody(1.0)[None], RATE)
    audio, _ = sf.read(path, dtype="float32")
    save_audio(path, resample(torch.from_numpy(audio)[None], RATE, TAKE_RATE), TAKE_RATE)
    return path


def take_at_model_rate(take) -> torch.Tensor:
    audio, rate = sf.read(take, dtype="float32")
    return resample(torch.from_numpy(audio)[None], rate, RATE)


def test_candidates_come_back_ranked_with_their_wavs_mixes_and_spectrograms(tiny_model, take, tmp_path, monkeypatch):
    loads, load = [], studio_module.load_pipeline
    monkeypatch.setattr(studio_module, "load_pipeline", lambda directory: loads.append(directory) or load(directory))
    pipelines, out = {}, tmp_path / "out"
    request = StudioRequest(prompt="organ", vocal=take, model_dir=tiny_model, num_inference_steps=2, num_candidates=3,
                            seed=4)
    result = run_studio(request, pipelines, out, progress=False)

    vocal = take_at_model_rate(take)
    assert [c.rank for c in result.candidates] == [1, 2, 3] and sorted(c.seed for c in result.candidates) == [4, 5, 6]
    scores = [c.score for c in result.candidates]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert result.summary == (f"3 candidates of 1.0 s from {tiny_model} ('discodiff' model, steps 2), ranked by "
                              "vocal fit")
    for candidate in result.candidates:
        accompaniment, rate = sf.read(candidate.accompaniment, dtype="float32")
        mix, mix_rate = sf.read(candidate.mix, dtype="float32")
        assert rate == mix_rate == RATE and accompaniment.shape == mix.shape == (vocal.shape[-1],)
        expected_mix = mix_with_vocal(torch.from_numpy(accompaniment)[None], vocal)[0].numpy()
        np.testing.assert_allclose(mix, expected_mix, atol=1e-3)  # the vocal is in the mix (16-bit files)
        assert not np.allclose(mix, accompaniment, atol=1e-2)
        picture = Image.open(candidate.spectrogram)
        assert picture.format == "PNG" and picture.height == 3 * SPECTROGRAM_PANEL  # vocal, accompaniment, mix
        assert candidate.scores.startswith(f"Rank {candidate.rank} · seed {candidate.seed}; fit {candidate.score:.3f} "
                                           "(consonance ")
    names = {f"{stem}_rank{rank}.{suffix}" for rank in (1, 2, 3)
             for stem, suffix in (("accompaniment", "wav"), ("mix", "wav"), ("spectrograms", "png"))}
    assert {path.name for path in out.iterdir()} == names

    again = run_studio(request, pipelines, tmp_path / "again", progress=False)
    assert loads == [tiny_model.resolve()] and len(pipelines) == 1  # one load per model directory
    assert [c.score for c in again.candidates] == pytest.approx(scores)  # same seeds, same candidates


def test_without_a_vocal_the_duration_sets_the_length_and_nothing_is_ranked(tiny_model, tmp_path):
    result = run_studio(StudioRequest(prompt="organ", model_dir=tiny_model, num_inference_steps=2, num_candidates=2,
                                      duration=0.5), {}, tmp_path, progress=False)
    assert [c.seed for c in result.candidates] == [0, 1] and all(c.score is None for c in result.candidates)
    assert "generation order" in result.summary
    for candidate in result.candidates:
        assert candidate.mix is None and sf.info(candidate.accompaniment).frames == RATE // 2
        assert Image.open(candidate.spectrogram).height == SPECTROGRAM_PANEL
        assert candidate.scores == f"Rank {candidate.rank} · seed {candidate.seed}"


def test_warnings_about_the_take_and_the_model_come_back(tiny_model, tmp_path):
    loud = tmp_path / "loud.wav"
    sf.write(loud, 3.0 * melody(1.0).numpy(), RATE, subtype="FLOAT")  # peak 1.2
    result = run_studio(StudioRequest(prompt="organ", vocal=loud, model_dir=tiny_model, num_inference_steps=2,
                                      num_candidates=1), {}, tmp_path / "out", progress=False)
    assert len(result.candidates) == 1
    assert any("beyond full scale" in message for message in result.warnings)
    assert any("not fitted (an untrained model)" in message for message in result.warnings)


def write_bad_take(kind: str, path):
    if kind == "not audio":
        path.write_text("these are words, not sound\n")
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), RATE)
    elif kind == "nan":
        sf.write(path, np.full(RATE // 10, np.nan, np.float32), RATE, subtype="FLOAT")
    elif kind == "silent":
        sf.write(path, np.zeros(RATE, np.float32), RATE)
    elif kind == "too long":
        sf.write(path, 0.1 * np.ones(601 * 1000, np.float32), 1000)
    return path


def generate_through_the_page(handler, vocal, model, num_candidates=2):
    """The Generate button's call, the fields as the page sends them."""
    return handler(None if vocal is None else str(vocal), "organ", str(model), 2, 1.0, 1.0, 0, num_candidates, None)


def cli_error(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("kind", ["not audio", "empty", "nan"])
def test_a_bad_upload_is_a_gradio_error_with_the_cli_message(kind, tiny_model, tmp_path):
    bad = write_bad_take(kind, tmp_path / "take.wav")
    pipelines, cache = {}, tmp_path / "cache"
    with pytest.raises(gr.Error) as error:
        generate_through_the_page(request_handler(gr, pipelines, None, cache), bad, tiny_model)
    assert error.value.message == cli_error("sample", "--model", tiny_model, "--prompt", "organ", "--vocal", bad,
                                            "--out", tmp_path / "out.wav")
    assert pipelines == {} and list(cache.iterdir()) == []  # refused before the model loads; no folder left behind


@pytest.mark.parametrize("kind, message", [
    ("silent", "signal is silent (below -60 dBFS RMS); the candidates are ranked by how well they fit the vocal"),
    ("too long", "the vocal is 601.0 s long, more than the 600 s one call can generate"),
])
def test_a_silent_or_too_long_upload_is_a_gradio_error(kind, message, tiny_model, tmp_path):
    bad = write_bad_take(kind, tmp_path / "take.wav")
    pipelines = {}
    with pytest.raises(gr.Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate_through_the_page(request_handler(gr, pipelines, None, tmp_path / "cache"), bad, tiny_model)
    assert pipelines == {}


@pytest.mark.parametrize("request_fields, message", [
    (dict(num_candidates=MAX_STUDIO_CANDIDATES + 1), f"the studio shows at most {MAX_STUDIO_CANDIDATES}"),
    (dict(num_candidates=0), "num_candidates=0"),
    (dict(prompt="  "), "blank"),
    (dict(duration=2.0), "clear Duration"),
])
def test_bad_requests_are_refused_before_the_model_loads(request_fields, message, tiny_model, take, tmp_path):
    fields = dict(prompt="organ", vocal=take, model_dir=tiny_model, num_candidates=2) | request_fields
    pipelines = {}
    with pytest.raises(GenerationError, match=message):
        run_studio(StudioRequest(**fields), pipelines, tmp_path, progress=False)
    assert pipelines == {} and list(tmp_path.iterdir()) == []


def test_a_codec_model_directory_is_refused(codec_model, take, tmp_path):
    with pytest.raises(ConfigError, match="'codec' model, which does not generate music"):
        run_studio(StudioRequest(prompt="organ", vocal=take, model_dir=codec_model), {}, tmp_path, progress=False)
    with pytest.raises(gr.Error, match="does not generate music"):
        generate_through_the_page(request_handler(gr, {}, None, tmp_path / "cache"), take, codec_model)
    status, *settings = model_handler(gr, {})(str(codec_model))
    assert status.startswith("**This model cannot be used:**") and "does not generate music" in status
    assert all(update == gr.update() for update in settings)  # the fields keep their values


def test_the_settings_fill_in_from_the_model(tiny_model):
    pipelines = {}
    status, steps, text_guidance, vocal_guidance, duration = model_handler(gr, pipelines)(str(tiny_model))
    assert status == f"A 'discodiff' model: {tiny_model}" and list(pipelines) == [tiny_model.resolve()]
    assert steps == gr.update(value=20, visible=True) and text_guidance == gr.update(value=1.0, visible=True)
    assert vocal_guidance == gr.update(value=1.0, visible=True) and duration == gr.update(value=4.0)


def test_settings_a_family_does_not_take_are_left_out_with_a_note():
    request = StudioRequest(prompt="organ", num_inference_steps=5, text_guidance=2.0)
    assert family_options(resolve_family("ar"), request) == ({"text_guidance": 2.0},
                                                              ["Steps: not a setting of 'ar' models, left out"])
    assert family_options(resolve_family("discodiff"), request) == ({"num_inference_steps": 5, "text_guidance": 2.0}, [])


def test_the_page_has_every_field_and_a_hidden_slot_per_candidate(tiny_model):
    def components(studio):
        return {block.elem_id: block for block in studio.blocks.values() if getattr(block, "elem_id", None)}

    page = components(build_studio(tiny_model))
    fields = {"vocal", "prompt", "model-dir", "model-status", "steps", "text-guidance", "vocal-guidance", "seed",
              "num-candidates", "duration-seconds", "generate", "summary"}
    slots = {f"candidate-{n}{part}" for n in range(1, MAX_STUDIO_CANDIDATES + 1)
             for part in ("", "-scores", "-accompaniment", "-mix", "-spectrogram")}
    assert set(page) == fields | slots
    assert page["vocal"].sources == ["upload", "microphone"] and page["vocal"].type == "filepath"
    assert page["num-candidates"].maximum == MAX_STUDIO_CANDIDATES
    assert not any(page[f"candidate-{n}"].visible for n in range(1, MAX_STUDIO_CANDIDATES + 1))
    assert page["model-dir"].value == str(tiny_model)
    assert components(build_studio())["model-dir"].value == str(shipped_model_dir())


def test_the_studio_command_serves_on_the_loopback_interface_by_default(tiny_model, monkeypatch):
    import discodiff.ui

    launches = []
    monkeypatch.setattr(discodiff.ui, "launch_studio", lambda **arguments: launches.append(arguments))
    result = runner.invoke(app, ["studio", "--model", str(tiny_model), "--port", "7999"])
    assert result.exit_code == 0, result.output
    assert launches == [dict(model_dir=tiny_model, host="127.0.0.1", port=7999, clap=None)]


def test_the_studio_command_refuses_a_codec_model_before_serving(codec_model, monkeypatch):
    import discodiff.ui

    monkeypatch.setattr(discodiff.ui, "launch_studio", lambda **arguments: pytest.fail("the studio was served"))
    assert "does not generate music" in cli_error("studio", "--model", codec_model)


def test_the_studio_command_names_the_ui_extra_without_gradio(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio → ImportError
    assert "pip install 'discodiff[ui]'" in cli_error("studio")
