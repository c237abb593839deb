"""DiscoDiffPipeline on tiny random models: guidance layout, nulls, padding, save/load, w/ PL, CLI."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from discodiff.build import build_pipeline
from discodiff.cli import app
from discodiff.config import DiscoDiffConfig
from discodiff.errors import ModelDirectoryError
from discodiff.pipeline import DiscoDiffPipeline
from conftest import tone

PROMPTS = ["a slow Baroque chorale in F sharp minor", "organ"]


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Fill zero-initialised output layers so a fresh model's prediction depends on its inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def pipeline():
    pipe = build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml"), seed=0)
    randomize_(pipe.primary, 1)
    randomize_(pipe.secondary, 2)
    return pipe


def generators(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_output_shapes_and_duration(pipeline):
    out = pipeline(PROMPTS, duration=1.0, num_inference_steps=3, generator=generators(2), progress=False)
    assert out.audios.shape == (2, 1, 44100) and isinstance(out.audios, np.ndarray)
    assert out.latents.shape == (2, 72, pipeline.codec.frames_for(44100))


def test_vocal_sets_length(pipeline):
    vocal = tone(0.7)
    out = pipeline(PROMPTS[:1], vocal=vocal, num_inference_steps=2, generator=generators(1), output_type="pt", progress=False)
    assert out.audios.shape == (1, 1, vocal.shape[-1])


class CallRecorder:
    """Wraps a U-Net's forward and records the drop masks of every call."""

    def __init__(self, unet):
        self.calls = []
        self.unet, self.forward = unet, unet.forward

        def recording_forward(sample, timestep, contexts, context_masks=None, pooled=None, condition_dropped=None, **kw):
            self.calls.append(([None if d is None else d.clone() for d in condition_dropped], [c is None for c in contexts]))
            return self.forward(sample, timestep, contexts, context_masks, pooled, condition_dropped=condition_dropped, **kw)

        unet.forward = recording_forward

    def restore(self):
        self.unet.forward = self.forward


@pytest.mark.parametrize("with_vocal", [True, False])
def test_unconditional_rows_see_nulls_at_every_step_for_both_unets(pipeline, with_vocal):
    recorders = [CallRecorder(pipeline.primary), CallRecorder(pipeline.secondary)]
    try:
        pipeline(PROMPTS, vocal=tone(0.5) if with_vocal else None, duration=0.5, num_inference_steps=4,
                 text_guidance=3.0, vocal_guidance=2.0, generator=generators(2), progress=False)
    finally:
        for r in recorders:
            r.restore()
    B = len(PROMPTS)
    for recorder in recorders:
        assert len(recorder.calls) >= 4
        for dropped, context_is_none in recorder.calls:
            text_dropped, vocal_dropped = dropped
            if with_vocal:  # stages: uncond | text only | text + vocal
                assert text_dropped.tolist() == [True] * B + [False] * 2 * B
                assert vocal_dropped.tolist() == [True] * 2 * B + [False] * B
            else:  # stages: uncond | text; the vocal context is absent (null) in every row
                assert text_dropped.tolist() == [True] * B + [False] * B
                assert vocal_dropped is None and context_is_none == [False, True]


def test_guidance_one_equals_conditional(pipeline):
    conditions, _ = pipeline.conditions(PROMPTS, tone(0.3)[None].expand(2, -1, -1))
    x = torch.randn(2, 8, conditions.contexts[1].shape[1], generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.8])
    conditional = pipeline.primary(x, t, conditions.contexts, conditions.masks, conditions.pooled).sample
    shortcut = pipeline.denoiser(pipeline.primary, conditions, [1.0, 1.0])(x, t)
    batched = pipeline.denoiser(pipeline.primary, conditions, [1.0 + 1e-7, 1.0])(x, t)  # forces the batched path
    assert torch.equal(shortcut, conditional)
    assert (batched - conditional).abs().max() < 1e-5
    unconditional = pipeline.primary(x, t, [None, None], pooled=None).sample
    zero = pipeline.denoiser(pipeline.primary, conditions, [0.0, 0.0])(x, t)
    assert (zero - unconditional).abs().max() < 1e-5
    assert (conditional - unconditional).abs().max() > 1e-3  # the conditions matter


def test_prompt_padding_does_not_change_samples(pipeline):
    """A short prompt batched with a long one (so it is padded) gives the same sample as alone."""
    kwargs = dict(duration=0.4, num_inference_steps=3, text_guidance=2.0, output_type="latent", progress=False)
    both = pipeline(PROMPTS, generator=generators(2), **kwargs).latents
    alone = pipeline(PROMPTS[1:], generator=generators(1, seed=1), **kwargs).latents
    assert (both[1:] - alone).abs().max() < 1e-4


def test_save_load_gives_bit_identical_samples(pipeline, tmp_path):
    kwargs = dict(duration=0.4, num_inference_steps=3, text_guidance=2.0, progress=False)
    before = pipeline(PROMPTS, vocal=tone(0.4), generator=generators(2), **kwargs)
    loaded = DiscoDiffPipeline.from_pretrained(pipeline.save_pretrained(tmp_path / "model"))
    after = loaded(PROMPTS, vocal=tone(0.4), generator=generators(2), **kwargs)
    assert np.array_equal(before.audios, after.audios) and torch.equal(before.latents, after.latents)
    assert (tmp_path / "model" / "primary" / "diffusion_pytorch_model.safetensors").is_file()


def test_primary_latents_run_the_secondary_alone(pipeline):
    recorder = CallRecorder(pipeline.primary)
    frames = pipeline.codec.frames_for(round(0.3 * 44100))
    given = torch.randn(1, 8, frames, generator=torch.Generator().manual_seed(3))
    try:
        out = pipeline(PROMPTS[:1], duration=0.3, primary_latents=given, num_inference_steps=2, output_type="latent",
                       generator=generators(1), progress=False)
    finally:
        recorder.restore()
    assert recorder.calls == []
    assert (out.latents[:, :8] - given).abs().max() < 1e-5
    with pytest.raises(ValueError, match="primary_latents must be"):
        pipeline(PROMPTS[:1], duration=0.3, primary_latents=given[..., :-1], progress=False)


def test_cli_new_model_and_sample(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["new-model", str(tmp_path / "m"), "--config", "configs/tiny.yaml"])
    assert result.exit_code == 0, result.output
    vocal = tmp_path / "v.wav"
    from discodiff.audio import save_audio

    save_audio(vocal, tone(0.6))
    result = runner.invoke(app, ["sample", "--model", str(tmp_path / "m"), "--prompt", "chorale", "--vocal", str(vocal),
                                 "--out", str(tmp_path / "acc.wav"), "--mix", str(tmp_path / "mix.wav"), "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    import soundfile as sf

    acc, sr = sf.read(tmp_path / "acc.wav")
    assert sr == 44100 and acc.shape == (tone(0.6).shape[-1],) and (tmp_path / "mix.wav").is_file()


# --- where the coarse-to-fine split falls: primary_codebooks (P = K is the flat ablation) -------------------------

def tiny_with_primary_codebooks(codebooks: int, seed: int = 0) -> DiscoDiffPipeline:
    pipe = build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml", [f"primary_codebooks={codebooks}"]), seed=seed)
    for index, module in enumerate(pipe.trainable_components().values()):
        randomize_(module, 10 + index)
    return pipe


def test_flat_model_is_one_unet_on_all_codebooks(tmp_path):
    pipe = tiny_with_primary_codebooks(9)
    assert pipe.is_flat and pipe.secondary is None and pipe.secondary_vocal_encoder is None
    assert (pipe.primary.config.in_channels, pipe.primary.config.out_channels) == (72, 72)
    assert list(pipe.trainable_components()) == ["primary", "primary_vocal_encoder"]
    recorder = CallRecorder(pipe.primary)
    try:
        out = pipe(PROMPTS, vocal=tone(0.4), duration=0.4, num_inference_steps=3, generator=generators(2), progress=False)
    finally:
        recorder.restore()
    assert out.latents.shape == (2, 72, pipe.codec.frames_for(round(0.4 * 44100)))
    assert len(recorder.calls) == 3  # one batched guided call per step, and no secondary stage
    loaded = DiscoDiffPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "flat"))
    assert loaded.is_flat and not (tmp_path / "flat" / "secondary").exists()
    again = loaded(PROMPTS, vocal=tone(0.4), duration=0.4, num_inference_steps=3, generator=generators(2), progress=False)
    assert np.array_equal(out.audios, again.audios)
    with pytest.raises(ValueError, match="flat model"):
        pipe(PROMPTS[:1], duration=0.3, primary_latents=out.latents[:1], progress=False)


def test_primary_of_several_codebooks_feeds_the_secondary(tmp_path):
    pipe = tiny_with_primary_codebooks(3)
    assert (pipe.primary_channels, pipe.secondary.config.in_channels, pipe.secondary.config.out_channels) == (24, 72, 48)
    frames = pipe.codec.frames_for(round(0.3 * 44100))
    given = torch.randn(1, 24, frames, generator=torch.Generator().manual_seed(3))
    out = pipe(PROMPTS[:1], duration=0.3, primary_latents=given, num_inference_steps=2, output_type="latent",
               generator=generators(1), progress=False)
    assert (out.latents[:, :24] - given).abs().max() < 1e-5
    loaded = DiscoDiffPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "p3"))
    assert loaded.primary_channels == 24 and not loaded.is_flat


def test_split_is_checked_when_built_and_loaded(tmp_path):
    with pytest.raises(ValueError, match="primary_codebooks=10 exceeds the codec's 9 codebooks"):
        tiny_with_primary_codebooks(10)
    with pytest.raises(ValueError, match="primary_codebooks"):
        DiscoDiffConfig.from_yaml("configs/tiny.yaml", ["primary_codebooks=0"])
    two_stage, flat = tiny_with_primary_codebooks(1), tiny_with_primary_codebooks(9)
    with pytest.raises(ValueError, match="a flat model.*but a secondary was given"):
        DiscoDiffPipeline(two_stage.codec, two_stage.text_encoder, flat.primary, two_stage.secondary, two_stage.scheduler,
                          two_stage.latent_stats, two_stage.sources, two_stage.defaults)
    with pytest.raises(ValueError, match="no secondary U-Net, but the primary generates only 8 of the 72"):
        DiscoDiffPipeline(two_stage.codec, two_stage.text_encoder, two_stage.primary, None, two_stage.scheduler,
                          two_stage.latent_stats, two_stage.sources, two_stage.defaults)
    directory = two_stage.save_pretrained(tmp_path / "two")
    import shutil
    shutil.rmtree(directory / "secondary")
    with pytest.raises(ModelDirectoryError, match="secondary"):
        DiscoDiffPipeline.from_pretrained(directory)
