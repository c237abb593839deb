"""ARPipeline and the stage sampler on tiny random models: KV cache = no cache token for token (every stage, both
patterns, guided), guidance with every scale 1 = the conditional model, per-sample generators, greedy top-k,
save/load bit-identical, the shared call's checks, and the CLI for the AR family."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from discodiff import load_pipeline
from conftest import tone
from discodiff.ar import ARConfig, ARPipeline, SamplingSettings, sample_stage
from discodiff.conditioning.semantic import SemanticTokenizer
from discodiff.ar.build import build_pipeline
from discodiff.ar.sampling import guidance_rows
from discodiff.ar.stages import StageTokens, stage_conditions, stage_target
from discodiff.errors import GenerationError, ModelDirectoryError
from discodiff.guidance import guided_prediction, split_stages

CONFIG = "configs/ar_tiny.yaml"
STAGES = ("semantic", "coarse", "fine")
FRAMES = 12
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sharpen(pipeline: ARPipeline, seed: int = 1) -> ARPipeline:
    """Weights drawn large enough that every input moves the logits (a freshly initialised model is near uniform)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in pipeline.stages.values():
            for name, parameter in model.named_parameters():
                if "norm" not in name:
                    parameter.normal_(std=0.3, generator=generator)
    return pipeline


def fitted(pipeline: ARPipeline) -> ARPipeline:
    """The tokenizer fitted on the tiny codec's latents of tones and noise (random centroids put every frame in one
    cluster)."""
    audio = torch.stack([tone(0.5, freqs=(110.0 * (i + 1),), seed=i) for i in range(4)] +
                        [0.1 * torch.randn(1, 22050, generator=torch.Generator().manual_seed(5))])
    features = pipeline.codec.encode(audio, progress=False)[:, : pipeline.features.dim].transpose(1, 2)
    pipeline.tokenizer = SemanticTokenizer.fit([features], k=pipeline.tokenizer.k, seed=0, extractor=pipeline.features)
    pipeline.tokenizer_fitted = True
    return pipeline


@pytest.fixture(scope="module", params=["delay", "flatten"])
def pipeline(request) -> ARPipeline:
    return fitted(sharpen(build_pipeline(ARConfig.from_yaml(CONFIG, [f"pattern={request.param}"]), seed=0)))


def stage_inputs(pipeline: ARPipeline, batch: int = 2, seed: int = 0) -> tuple[StageTokens, tuple]:
    """Random true tokens of every stage's conditions (codes, semantic tokens, a vocal) and an encoded prompt batch."""
    generator = torch.Generator().manual_seed(seed)
    k, size = pipeline.tokenizer.k, pipeline.codec.spec.codebook_size
    mask = torch.ones(batch, FRAMES, dtype=torch.bool)
    tokens = StageTokens(codes=torch.randint(0, size, (batch, pipeline.codec.n_codebooks, FRAMES), generator=generator),
                         semantic=torch.randint(0, k, (batch, FRAMES), generator=generator),
                         vocal_semantic=torch.randint(0, k, (batch, FRAMES), generator=generator), frame_mask=mask,
                         semantic_mask=mask, codec_rate=pipeline.codec.frame_rate, semantic_rate=pipeline.semantic_rate)
    text = pipeline.text_encoder(["a calm chorale", "a fast fugue"][:batch])
    return tokens, (text.sequence, text.mask)


def scales_of(pipeline: ARPipeline, stage: str) -> list[float]:
    return [2.5, 1.7] if pipeline.specs[stage].vocal_streams else [2.5]


@pytest.mark.parametrize("stage", STAGES)
def test_kv_cache_sampling_equals_no_cache_token_for_token(pipeline, stage):
    tokens, text = stage_inputs(pipeline)
    spec = pipeline.specs[stage]
    conditions = stage_conditions(spec, tokens)
    settings = SamplingSettings(temperature=1.3, top_k=20, top_p=0.95)
    runs = [sample_stage(pipeline.stages[stage], spec, FRAMES, conditions, text, scales_of(pipeline, stage), settings,
                         torch.Generator().manual_seed(7), use_cache=cache, progress=False) for cache in (True, False)]
    assert runs[0].shape == (2, spec.n_target, FRAMES)
    assert torch.equal(runs[0], runs[1])
    assert runs[0].min() >= 0 and runs[0].max() < spec.vocab_size


@pytest.mark.parametrize("stage", STAGES)
def test_guidance_with_every_scale_one_is_the_conditional_model(pipeline, stage):
    """The batched (n+1)·B forward combined with scales 1 gives exactly the conditional rows' log-probabilities; other
    scales move them, and the dropped rows really drop their condition."""
    tokens, text = stage_inputs(pipeline)
    spec, model = pipeline.specs[stage], pipeline.stages[stage]
    conditions = spec.conditions_at_steps(stage_conditions(spec, tokens), FRAMES)
    steps = conditions.shape[-1]
    inputs, _ = spec.teacher_forcing(stage_target(spec, tokens)[0])
    scales = scales_of(pipeline, stage)
    rows = guidance_rows(spec, conditions, text, len(scales))
    with torch.no_grad():
        batched = torch.log_softmax(model(inputs.repeat(len(scales) + 1, 1, 1), rows.conditions, rows.context,
                                          rows.mask).logits, -1)
        conditional = torch.log_softmax(model(inputs, conditions, *text).logits, -1)
    stages = split_stages(batched, len(scales))
    torch.testing.assert_close(guided_prediction(stages, [1.0] * len(scales)), stages[-1], rtol=0, atol=0)
    torch.testing.assert_close(stages[-1], conditional, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(guided_prediction(stages, scales), conditional, atol=1e-3)
    assert not torch.allclose(stages[0], stages[-1], atol=1e-3), "the unconditional rows must differ"
    assert steps == spec.num_steps(FRAMES)


def test_per_sample_generators_make_each_row_independent_of_the_batch(pipeline):
    tokens, text = stage_inputs(pipeline)
    spec = pipeline.specs["coarse"]
    conditions = stage_conditions(spec, tokens)
    both = sample_stage(pipeline.stages["coarse"], spec, FRAMES, conditions, text, [],
                        generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)], progress=False)
    alone = sample_stage(pipeline.stages["coarse"], spec, FRAMES, conditions[1:], (text[0][1:], text[1][1:]), [],
                         generator=[torch.Generator().manual_seed(4)], progress=False)
    assert torch.equal(both[1:], alone)
    with pytest.raises(ValueError, match="2 generators for a batch of 1"):
        sample_stage(pipeline.stages["coarse"], spec, FRAMES, conditions[1:], (text[0][1:], text[1][1:]), [],
                     generator=[torch.Generator(), torch.Generator()], progress=False)


def test_top_k_one_is_greedy_whatever_the_generator(pipeline):
    tokens, text = stage_inputs(pipeline)
    spec = pipeline.specs["semantic"]
    conditions = stage_conditions(spec, tokens)
    greedy = [sample_stage(pipeline.stages["semantic"], spec, FRAMES, conditions, text, [], SamplingSettings(top_k=1),
                           torch.Generator().manual_seed(seed), progress=False) for seed in (0, 1)]
    sampled = [sample_stage(pipeline.stages["semantic"], spec, FRAMES, conditions, text, [], SamplingSettings(),
                            torch.Generator().manual_seed(seed), progress=False) for seed in (0, 1)]
    assert torch.equal(greedy[0], greedy[1]) and not torch.equal(sampled[0], sampled[1])


def test_the_call_generates_every_stage_and_decodes(pipeline):
    vocal = 0.1 * torch.randn(1, 1, 11025, generator=torch.Generator().manual_seed(0))
    out = pipeline(["a calm chorale", "a fast fugue"], vocal=vocal, generator=torch.Generator().manual_seed(0),
                   progress=False, text_guidance=2.0, vocal_guidance=2.0)
    frames = pipeline.codec.frames_for(11025)
    assert out.audios.shape == (2, 1, 11025) and out.codes.shape == (2, pipeline.codec.n_codebooks, frames)
    assert out.semantic.shape == (2, frames) and out.sample_rate == pipeline.sample_rate
    without = pipeline("a calm chorale", duration=0.2, generator=torch.Generator().manual_seed(0), progress=False,
                       output_type="codes")
    assert without.audios is None and without.codes.shape[-1] == pipeline.codec.frames_for(round(0.2 * 44100))
    other = tone(0.25, freqs=(330.0,))[None]
    changed_vocal = pipeline(["a calm chorale", "a fast fugue"], vocal=other, generator=torch.Generator().manual_seed(0),
                             progress=False, text_guidance=2.0, vocal_guidance=2.0)
    assert not torch.equal(changed_vocal.codes, out.codes), "the vocal must reach the stages"


def test_given_semantic_tokens_and_coarse_codes_skip_their_stages(pipeline):
    tokens, _ = stage_inputs(pipeline, batch=1)
    duration = FRAMES * pipeline.codec.hop_length / pipeline.sample_rate
    coarse = tokens.codes[:, : pipeline.coarse_codebooks]
    out = pipeline("a calm chorale", duration=duration, semantic_tokens=tokens.semantic, coarse_codes=coarse,
                   generator=torch.Generator().manual_seed(0), progress=False, output_type="codes")
    assert torch.equal(out.semantic, tokens.semantic) and torch.equal(out.codes[:, : pipeline.coarse_codebooks], coarse)
    with pytest.raises(GenerationError, match="give semantic_tokens with it"):
        pipeline("x", duration=duration, coarse_codes=coarse, progress=False)
    with pytest.raises(GenerationError, match=r"semantic_tokens must be an integer tensor \[1, 12\]"):
        pipeline("x", duration=duration, semantic_tokens=tokens.semantic[:, :5], progress=False)
    with pytest.raises(GenerationError, match="coarse_codes ids must be in 0 … 63"):
        pipeline("x", duration=duration, semantic_tokens=tokens.semantic, coarse_codes=coarse + 64, progress=False)


@pytest.mark.parametrize("options,message", [
    ({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"text_guidance": -1.0}, "text_guidance"),
    ({"vocal_guidance": float("nan")}, "vocal_guidance"), ({"output_type": "latent"}, "output_type"),
    ({"duration": 0.0}, "duration"), ({"overlap": -1.0}, "overlap"),
    ({"generator": [torch.Generator()] * 2}, "2 generators for 1 prompt"),
])
def test_bad_arguments_are_refused_before_any_model_runs(pipeline, options, message, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("a model ran")

    for model in pipeline.stages.values():
        monkeypatch.setattr(model, "forward", no_compute)
    with pytest.raises(GenerationError, match=message):
        pipeline("a calm chorale", progress=False, **options)


def test_save_load_is_bit_identical_and_damage_is_named(pipeline, tmp_path):
    directory = pipeline.save_pretrained(tmp_path / "ar")
    (directory / "NOTES.md").write_text("mine")
    loaded = load_pipeline(directory)
    assert isinstance(loaded, ARPipeline) and loaded.pattern == pipeline.pattern
    for name in STAGES:
        ours, theirs = pipeline.stages[name].state_dict(), loaded.stages[name].state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(loaded.tokenizer.centroids, pipeline.tokenizer.centroids)
    kwargs = dict(duration=0.1, progress=False, output_type="codes", text_guidance=2.0)
    assert torch.equal(loaded("x", generator=torch.Generator().manual_seed(0), **kwargs).codes,
                       pipeline("x", generator=torch.Generator().manual_seed(0), **kwargs).codes)
    loaded.save_pretrained(directory)  # saving back into the directory it came from keeps the user's file
    assert (directory / "NOTES.md").read_text() == "mine"

    (directory / "semantic_tokenizer.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelDirectoryError, match="semantic_tokenizer.safetensors"):
        load_pipeline(directory)
    pipeline.save_pretrained(directory)
    (directory / "fine" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelDirectoryError, match=r"fine.*missing.*weights"):
        load_pipeline(directory)


def test_a_stage_that_does_not_fit_the_codec_is_refused(tmp_path):
    built = build_pipeline(ARConfig.from_yaml(CONFIG), seed=0)
    other = build_pipeline(ARConfig.from_yaml(CONFIG, ["coarse_codebooks=2"]), seed=0)
    built.stages["fine"] = other.stages["fine"]
    with pytest.raises(ValueError, match="fine stage has n_codebooks=7"):
        ARPipeline(built.codec, built.text_encoder, built.tokenizer, built.features, built.stages, built.pattern,
                   built.coarse_codebooks, built.tokenizer_fitted, built.sources, built.defaults)


def test_new_model_and_sample_through_the_cli(tmp_path):
    from discodiff.audio import save_audio
    from discodiff.cli import app

    model = tmp_path / "model"
    result = runner.invoke(app, ["new-model", str(model), "--config", CONFIG])
    assert result.exit_code == 0 and "untrained ar model" in result.output, result.output
    vocal = tmp_path / "take.wav"
    save_audio(vocal, 0.1 * torch.randn(1, 8820, generator=torch.Generator().manual_seed(0)), 44100)
    out = tmp_path / "out.wav"
    result = runner.invoke(app, ["sample", "--model", str(model), "--prompt", "a chorale", "--vocal", str(vocal),
                                 "--out", str(out), "--top-k", "5", "--temperature", "0.9", "--text-guidance", "2",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    import soundfile

    assert soundfile.info(str(out)).frames == 8820
    result = runner.invoke(app, ["sample", "--model", str(model), "--prompt", "x", "--steps", "4", "--out",
                                 str(tmp_path / "no.wav")])
    assert result.exit_code == 1 and "--steps: not an option of the 'ar' family" in result.output
    assert "--top-k" in result.output and "--coarse-codes" not in result.output


def test_ar_base_matches_the_diffusion_base_in_parameters():
    """configs/ar_base.yaml is sized like configs/base.yaml (both with Flan-T5-large widths on the 44.1 kHz DAC)."""
    from discodiff.ar.build import stage_parameter_counts
    from discodiff.bench.sampling import unet_parameter_counts
    from discodiff.conditioning import VocalConditioner
    from discodiff.config import DiscoDiffConfig

    diffusion = DiscoDiffConfig.from_yaml("configs/base.yaml")
    vocal = {k: v for k, v in vars(diffusion.vocal_encoder).items() if k != "enabled"}
    with torch.device("meta"):
        vocal_parameters = VocalConditioner(in_channels=72, **vocal).num_parameters()
    diffusion_total = sum(unet_parameter_counts(diffusion)) + 2 * vocal_parameters
    ar_total = sum(stage_parameter_counts(ARConfig.from_yaml("configs/ar_base.yaml")).values())
    assert 0.9 < ar_total / diffusion_total < 1.1, (ar_total, diffusion_total)


def test_hubert_semantic_tokens_at_50_hz(tmp_path):
    """An AR model on SSL features (the tiny HuBERT, 50 Hz at 16 kHz): the semantic stage runs at 50 Hz, the coarse
    stage reads it by time at the codec's 86.13 Hz, and the bundled extractor survives save/load."""
    config = ARConfig.from_yaml(CONFIG, ["tokenizer.features=hubert", "tokenizer.id=tiny", "tokenizer.layer=1"])
    pipeline = sharpen(build_pipeline(config, seed=0))
    assert pipeline.semantic_rate == 50.0 and pipeline.features_kind == "hubert"
    vocal = tone(0.5, freqs=(330.0,))[None]
    out = pipeline("a calm chorale", vocal=vocal, generator=torch.Generator().manual_seed(0), progress=False,
                   output_type="codes", text_guidance=2.0, vocal_guidance=2.0)
    frames = pipeline.codec.frames_for(vocal.shape[-1])
    assert out.codes.shape[-1] == frames and out.semantic.shape[-1] == round(frames * 50 / pipeline.codec.frame_rate)
    with pytest.raises(GenerationError, match="hubert features of audio"):
        pipeline.semantic_tokens(torch.zeros(1, pipeline.codec.latent_channels, 4))
    directory = pipeline.save_pretrained(tmp_path / "ar-hubert")
    assert (directory / "semantic_features" / "config.json").is_file()
    loaded = load_pipeline(directory)
    assert loaded.features.description == pipeline.features.description
    again = loaded("a calm chorale", vocal=vocal, generator=torch.Generator().manual_seed(0), progress=False,
                   output_type="codes", text_guidance=2.0, vocal_guidance=2.0)
    assert torch.equal(again.codes, out.codes)


@pytest.mark.slow
def test_ar_vs_diffusion_benchmark_prints_the_ratios(capsys, tmp_path):
    from discodiff.bench.ar_vs_diffusion import main

    record = tmp_path / "bench.json"
    main(["--diffusion", "configs/tiny.yaml", "--ar", CONFIG, "--durations", "0.5", "1", "--steps", "2",
          "--cache-seconds", "0.5", "--codec", "tiny", "--json", str(record)])
    printed = capsys.readouterr().out
    assert "ratio wall(AR)/wall(diffusion) at 1 s" in printed and "speed-up of the cache" in printed
    import json

    records = json.loads(record.read_text())["records"]
    assert {r["family"] for r in records} == {"ar", "discodiff"} and any(not r["use_cache"] for r in records)
    assert all(r["wall_s"] > 0 and r["rtf"] > 0 for r in records)
