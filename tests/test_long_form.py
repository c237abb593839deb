"""Long-form generation: the window plan, inpainting of the known frames, and the diffusion pipeline past its window."""

import math

import pytest
import torch

from discodiff.build import build_pipeline
from discodiff.config import DiscoDiffConfig
from discodiff.diffusion import SCHEDULERS, make_scheduler, sample
from discodiff.diffusion.inpainting import inpainting_denoiser
from discodiff.errors import GenerationError
from discodiff.long_form import DEFAULT_OVERLAP_SHARE, Window, overlap_frames, plan_windows
from conftest import tone
from test_pipeline import generators, randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the plan -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("total, window, overlap", [(100, 30, 10), (31, 30, 0), (61, 30, 29), (1000, 86, 21), (5, 30, 3)])
def test_windows_make_every_frame_once(total, window, overlap):
    windows = plan_windows(total, window, overlap)
    made = [frame for w in windows for frame in range(total)[w.new]]
    assert made == list(range(total))
    assert all(w.length <= window for w in windows) and windows[-1].stop == total
    assert windows[0].known == 0 and all(w.known == (overlap if total > window else 0) for w in windows[1:])
    assert all(w.start == previous.stop - w.known for previous, w in zip(windows, windows[1:]))


def test_one_window_when_it_fits():
    assert plan_windows(30, 30, 10) == [Window(0, 30, 0)]


@pytest.mark.parametrize("total, window, overlap", [(10, 5, 5), (10, 5, -1), (10, 5, 1.5), (0, 5, 1), (10, 0, 0)])
def test_bad_plans_are_refused(total, window, overlap):
    with pytest.raises(GenerationError):
        plan_windows(total, window, overlap)


def test_overlap_in_seconds():
    assert overlap_frames(None, 100, 86.1) == round(DEFAULT_OVERLAP_SHARE * 100)
    assert overlap_frames(0.5, 100, 86.0) == 43 and overlap_frames(0, 100, 86.0) == 0
    for bad in (-0.1, 100 / 86.0, 99.6 / 86.0, math.nan, math.inf, "1", True):
        with pytest.raises(GenerationError, match="overlap"):
            overlap_frames(bad, 100, 86.0)


# --- inpainting ----------------------------------------------------------------------------------------------------

def toy_denoiser(seed: int = 0):
    """A fixed smooth 'model': v from a random linear map of x_t and t (depends on every frame through a convolution)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, 4, 5, generator=g) * 0.2

    def denoise(x, t):
        return torch.nn.functional.conv1d(x, weight, padding=2) + t[:, None, None] * x

    return denoise


@pytest.mark.parametrize("name", SCHEDULERS)
def test_known_frames_are_reached_and_the_rest_follows_the_model(name):
    known = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(3))
    denoise = toy_denoiser()
    scheduler = make_scheduler(name)
    shape = (2, 4, 20)
    free = sample(denoise, shape, scheduler, 12, torch.Generator().manual_seed(5), progress=False)
    inpainted = sample(inpainting_denoiser(denoise, known), shape, scheduler, 12, torch.Generator().manual_seed(5),
                       progress=False)
    error = (inpainted[..., :6] - known).abs().max().item()
    assert error < 0.05, f"{name}: known frames off by {error}"
    assert (free[..., :6] - known).abs().max() > 0.5  # without inpainting they are not the known ones
    assert not torch.allclose(free[..., 6:], inpainted[..., 6:])  # the generated frames depend on the known ones


def test_nothing_known_is_the_plain_denoiser():
    denoise = toy_denoiser()
    assert inpainting_denoiser(denoise, torch.zeros(2, 4, 0)) is denoise


# --- the pipeline past its window ----------------------------------------------------------------------------------

WINDOW_SECONDS = 0.2


@pytest.fixture(scope="module")
def pipeline():
    pipe = build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml"), seed=0)
    randomize_(pipe.primary, 1)
    randomize_(pipe.secondary, 2)
    pipe.defaults["duration"] = WINDOW_SECONDS
    return pipe


def record_lengths(unet, monkeypatch) -> list[int]:
    lengths, forward = [], unet.forward

    def recording(sample, *args, **kwargs):
        lengths.append(sample.shape[-1])
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", recording)
    return lengths


def test_long_output_is_made_in_windows_no_longer_than_the_window(pipeline, monkeypatch):
    primary, secondary = record_lengths(pipeline.primary, monkeypatch), record_lengths(pipeline.secondary, monkeypatch)
    vocal = tone(1.0)
    out = pipeline(["organ"], vocal=vocal, num_inference_steps=2, generator=generators(1), progress=False,
                   text_guidance=1.0, vocal_guidance=1.0)
    window = pipeline.window_frames
    windows = plan_windows(pipeline.codec.frames_for(vocal.shape[-1]), window, round(DEFAULT_OVERLAP_SHARE * window))
    assert out.audios.shape == (1, 1, vocal.shape[-1]) and torch.isfinite(torch.as_tensor(out.audios)).all()
    assert len(windows) > 3
    assert primary == secondary == [w.length for w in windows for _ in range(2)]  # unguided: one call per step


def test_first_window_of_a_long_output_is_the_short_output(pipeline):
    vocal = tone(1.0)
    window_samples = pipeline.window_frames * pipeline.codec.hop_length
    settings = dict(num_inference_steps=3, output_type="latent", progress=False)
    long = pipeline(["organ"], vocal=vocal, generator=generators(1, 7), **settings).latents
    short = pipeline(["organ"], vocal=vocal[..., :window_samples], generator=generators(1, 7), **settings).latents
    p = pipeline.primary_channels
    torch.testing.assert_close(long[:, :p, : pipeline.window_frames], short[:, :p])


def test_windows_depend_on_their_overlap(pipeline):
    """The primary's first window is the same with and without an overlap (same noise, same conditions); the windows
    after it continue it only with an overlap."""
    settings = dict(duration=0.5, num_inference_steps=3, output_type="latent", progress=False, scheduler="ddim")
    window = pipeline.window_frames
    independent = pipeline(["organ"], overlap=0.0, generator=generators(1, 2), **settings).latents
    overlapping = pipeline(["organ"], overlap=0.05, generator=generators(1, 2), **settings).latents
    p = pipeline.primary_channels
    assert torch.equal(independent[:, :p, :window], overlapping[:, :p, :window])
    assert not torch.allclose(independent[:, :p, window:], overlapping[:, :p, window:])


def test_sample_cli_makes_a_take_longer_than_the_window(tmp_path):
    from typer.testing import CliRunner

    import soundfile as sf

    from discodiff.audio import save_audio
    from discodiff.cli import app

    runner = CliRunner()
    model = tmp_path / "tiny"
    made = runner.invoke(app, ["new-model", str(model), "--config", "configs/tiny.yaml", "--set", "sampling.duration=0.25"])
    assert made.exit_code == 0, made.output
    vocal = tmp_path / "take.wav"
    save_audio(vocal, tone(1.3), 44100)
    out = tmp_path / "acc.wav"
    result = runner.invoke(app, ["sample", "--model", str(model), "--prompt", "organ", "--vocal", str(vocal),
                                 "--out", str(out), "--steps", "2", "--overlap", "0.05", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sf.info(str(out)).frames == tone(1.3).shape[-1]
    refused = runner.invoke(app, ["sample", "--model", str(model), "--prompt", "organ", "--vocal", str(vocal),
                                  "--out", str(tmp_path / "b.wav"), "--overlap", "0.3", "--quiet"])
    assert refused.exit_code != 0 and "overlap=0.3" in refused.output and "window" in refused.output
