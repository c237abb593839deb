"""Long-form generation of the AR family on tiny random models: the stage sampler's ``prefix`` (kept unchanged, read by
the model as its context, continuing a run under the same generator), calls of several windows (lengths, joins, each
window on its own span of the conditions, ``overlap``, a stage window cut to its ``max_length``, 50 Hz HuBERT tokens),
an output of one window exactly as one sequence per stage, and the checks of ``overlap`` before any model runs.

The tiny models' training crop is set to 0.2 s: one window is 18 codec frames, its default overlap 4 frames."""

from __future__ import annotations

import math

import pytest
import torch

import discodiff.ar.pipeline as ar_pipeline
from conftest import tone
from discodiff.ar import ARConfig, ARPipeline, SamplingSettings, sample_stage
from discodiff.ar.build import build_pipeline
from discodiff.ar.sampling import guidance_rows
from discodiff.ar.stages import StageTokens, stage_conditions
from discodiff.errors import GenerationError
from discodiff.guidance import guided_prediction, split_stages
from discodiff.long_form import plan_windows
from test_ar_pipeline import fitted, sharpen

CONFIG = "configs/ar_tiny.yaml"
CROP = "sampling.duration=0.2"
WINDOW = 18  # codec frames of the 0.2 s crop (the tiny codec's hop is 512 samples at 44.1 kHz)
LONG = 61  # codec frames of a 3.5-window output: windows 0…18, 14…32, 28…46, 42…60, 56…61
STAGES = ("semantic", "coarse", "fine")
PROMPTS = ["a calm chorale", "a fast fugue"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seconds(pipeline: ARPipeline, frames: int) -> float:
    return frames * pipeline.codec.hop_length / pipeline.sample_rate


@pytest.fixture(scope="module", params=["delay", "flatten"])
def pipeline(request) -> ARPipeline:
    built = fitted(sharpen(build_pipeline(ARConfig.from_yaml(CONFIG, [f"pattern={request.param}", CROP]), seed=0)))
    assert built.codec.frames_for(round(built.default_duration * built.sample_rate)) == WINDOW
    return built


def stage_run(pipeline: ARPipeline, stage: str, frames: int = 12) -> dict:
    """The arguments of one guided ``sample_stage`` call of ``stage`` on random true conditions, batch of 2."""
    generator = torch.Generator().manual_seed(0)
    k, size = pipeline.tokenizer.k, pipeline.codec.spec.codebook_size
    mask = torch.ones(2, frames, dtype=torch.bool)
    tokens = StageTokens(codes=torch.randint(0, size, (2, pipeline.codec.n_codebooks, frames), generator=generator),
                         semantic=torch.randint(0, k, (2, frames), generator=generator),
                         vocal_semantic=torch.randint(0, k, (2, frames), generator=generator), frame_mask=mask,
                         semantic_mask=mask, codec_rate=pipeline.codec.frame_rate, semantic_rate=pipeline.semantic_rate)
    text = pipeline.text_encoder(PROMPTS)
    spec = pipeline.specs[stage]
    return dict(model=pipeline.stages[stage], spec=spec, num_frames=frames, conditions=stage_conditions(spec, tokens),
                text=(text.sequence, text.mask), scales=[2.5, 1.7] if spec.vocal_streams else [2.5], progress=False)


def most_likely(run: dict, target: torch.Tensor) -> torch.Tensor:
    """The guided model's most likely token at every position of ``target``'s pattern sequence given the sequence
    before it (teacher forcing, no cache): ``[B, model_codebooks, S]``, in the stage's model vocabulary."""
    spec, model, scales = run["spec"], run["model"], run["scales"]
    inputs, _ = spec.teacher_forcing(target)
    rows = guidance_rows(spec, spec.conditions_at_steps(run["conditions"], target.shape[-1]), run["text"], len(scales))
    with torch.no_grad():
        scores = torch.log_softmax(model(inputs.repeat(len(scales) + 1, 1, 1), rows.conditions, rows.context,
                                         rows.mask).logits, -1)
    scores = guided_prediction(split_stages(scores, len(scales)), scales)  # [B, Km, S, V]
    if spec.pattern.name == "delay":
        return scores.argmax(-1)
    steps = scores.shape[2]
    codebook = torch.arange(steps) % spec.n_target  # a flattened position emits its own codebook's ids only
    per_codebook = scores.view(*scores.shape[:3], spec.n_target, spec.vocab_size)
    own = per_codebook.gather(3, codebook.view(1, 1, steps, 1, 1).expand(*scores.shape[:3], 1, spec.vocab_size))
    return own.squeeze(3).argmax(-1) + codebook * spec.vocab_size


@pytest.mark.parametrize("stage", STAGES)
def test_a_prefix_is_kept_and_read_by_the_model_as_its_context(pipeline, stage):
    """Greedy: the prefix (another run's frames) comes back unchanged, and every later token is the guided model's
    most likely one given the sequence that holds the prefix; with the cache and without it alike."""
    run = stage_run(pipeline, stage)
    spec = run["spec"]
    greedy = SamplingSettings(top_k=1)
    other = sample_stage(**run, generator=torch.Generator().manual_seed(8))
    free = sample_stage(**run, settings=greedy)
    prefix = other[..., :5]
    continued = [sample_stage(**run, settings=greedy, prefix=prefix, use_cache=cache) for cache in (True, False)]
    assert torch.equal(continued[0], continued[1])
    assert torch.equal(continued[0][..., :5], prefix)
    assert not torch.equal(continued[0][..., 5:], free[..., 5:]), "the prefix must change the continuation"
    generated = spec.label_mask(torch.arange(run["num_frames"])[None] >= 5)[0]  # the positions of frames 5 …
    sequence = spec.sequence(continued[0])
    assert torch.equal(most_likely(run, continued[0])[:, generated], sequence[:, generated])


@pytest.mark.parametrize("stage", STAGES)
def test_a_prefix_of_a_run_continues_that_run_under_the_same_generator(pipeline, stage):
    """Sampled and guided: every step still draws, so a run's own first frames and the same generator give the run."""
    run = stage_run(pipeline, stage)
    settings = SamplingSettings(temperature=1.3, top_k=20, top_p=0.95)
    full = sample_stage(**run, settings=settings, generator=torch.Generator().manual_seed(7))
    for known in (1, 11):
        again = sample_stage(**run, settings=settings, generator=torch.Generator().manual_seed(7),
                             prefix=full[..., :known])
        assert torch.equal(again, full), known


def test_a_bad_prefix_is_refused(pipeline):
    run = stage_run(pipeline, "coarse")
    codes = torch.zeros(2, run["spec"].n_target, 12, dtype=torch.long)
    for prefix, message in ((codes, r"1 ≤ P < 12"), (codes[..., :0], r"1 ≤ P < 12"), (codes[:1, :, :4], r"\[2, 3, P\]"),
                            (codes[..., :4].float(), "integer tensor"), (codes[..., :4] + 64, "ids must be in 0 … 63")):
        with pytest.raises(GenerationError, match=message):
            sample_stage(**run, prefix=prefix)


def windows_of(pipeline: ARPipeline, monkeypatch) -> dict[str, list[tuple[int, int]]]:
    """Record ``(num_frames, prefix frames)`` of every ``sample_stage`` call the pipeline makes, per stage."""
    calls = {stage: [] for stage in STAGES}

    def recording(model, spec, num_frames, *args, prefix=None, **kwargs):
        calls[spec.name].append((num_frames, 0 if prefix is None else prefix.shape[-1]))
        return sample_stage(model, spec, num_frames, *args, prefix=prefix, **kwargs)

    monkeypatch.setattr(ar_pipeline, "sample_stage", recording)
    return calls


@pytest.mark.parametrize("with_vocal", [False, True])
def test_a_long_call_is_made_window_by_window(pipeline, with_vocal, monkeypatch):
    calls = windows_of(pipeline, monkeypatch)
    samples = round(seconds(pipeline, LONG) * pipeline.sample_rate)
    vocal = {"vocal": tone(samples / pipeline.sample_rate, freqs=(330.0, 440.0))[None]} if with_vocal else \
        {"duration": samples / pipeline.sample_rate}
    out = pipeline(PROMPTS, generator=torch.Generator().manual_seed(0), progress=False, output_type="pt",
                   text_guidance=2.0, vocal_guidance=2.0, **vocal)
    assert out.audios.shape == (2, 1, samples) and torch.isfinite(out.audios).all()
    assert out.codes.shape == (2, pipeline.codec.n_codebooks, LONG) and out.semantic.shape == (2, LONG)
    expected = [(window.length, window.known) for window in plan_windows(LONG, WINDOW, 4)]
    assert len(expected) == 5 and all(calls[stage] == expected for stage in STAGES), calls


def test_the_first_window_of_a_long_call_is_a_call_of_one_window(pipeline):
    """Greedy, no vocal: the windows after the first do not change it."""
    kwargs = dict(generator=torch.Generator().manual_seed(0), progress=False, output_type="codes", top_k=1,
                  text_guidance=2.0)
    long = pipeline(PROMPTS, duration=seconds(pipeline, LONG), **kwargs)
    short = pipeline(PROMPTS, duration=seconds(pipeline, WINDOW), **kwargs)
    assert short.codes.shape[-1] == WINDOW
    assert torch.equal(long.codes[..., :WINDOW], short.codes) and torch.equal(long.semantic[..., :WINDOW], short.semantic)


def test_each_window_reads_its_own_span_of_the_conditions(pipeline):
    """Greedy, teacher-forced semantic tokens: changing them from frame 40 on changes the codes from there, and not
    the frames 0 … 31 of the windows before the one that reads frame 40."""
    generator = torch.Generator().manual_seed(1)
    semantic = torch.randint(0, pipeline.tokenizer.k, (1, LONG), generator=generator)
    changed = semantic.clone()
    changed[:, 40:] = torch.randint(0, pipeline.tokenizer.k, (1, LONG - 40), generator=generator)
    runs = [pipeline("a calm chorale", duration=seconds(pipeline, LONG), semantic_tokens=tokens, top_k=1,
                     progress=False, output_type="codes").codes for tokens in (semantic, changed)]
    assert torch.equal(runs[0][..., :32], runs[1][..., :32])
    assert not torch.equal(runs[0][..., 40:], runs[1][..., 40:])


def test_overlap_zero_makes_independent_windows(pipeline):
    """Greedy, no vocal, no overlap: every full window is the first one again; the default overlap continues it."""
    kwargs = dict(duration=seconds(pipeline, 3 * WINDOW), top_k=1, progress=False, output_type="codes")
    independent = pipeline("a calm chorale", overlap=0.0, **kwargs).codes
    windows = independent.split(WINDOW, dim=-1)
    assert len(windows) == 3 and all(torch.equal(window, windows[0]) for window in windows)
    continued = pipeline("a calm chorale", **kwargs).codes
    assert torch.equal(continued[..., :WINDOW], windows[0])
    assert not torch.equal(continued[..., WINDOW: 2 * WINDOW], windows[0])


def test_one_window_is_one_sequence_per_stage(pipeline):
    """An output that fits one window (sampled, guided, a vocal) is exactly the call before long-form: each stage one
    sequence over the whole output, under one generator."""
    vocal = tone(seconds(pipeline, WINDOW), freqs=(330.0,))[None]
    settings = SamplingSettings(temperature=1.2, top_k=8, top_p=0.95)
    out = pipeline(PROMPTS, vocal=vocal, generator=torch.Generator().manual_seed(3), progress=False, output_type="codes",
                   temperature=1.2, top_k=8, top_p=0.95, text_guidance=2.0, vocal_guidance=1.5)
    assert out.codes.shape[-1] == WINDOW

    generator = torch.Generator().manual_seed(3)
    vocal_semantic = pipeline.vocal_semantic(vocal.expand(2, -1, -1))
    mask = torch.ones(2, WINDOW, dtype=torch.bool)
    tokens = StageTokens(None, None, vocal_semantic, mask, mask, pipeline.codec.frame_rate, pipeline.semantic_rate)
    text = pipeline.text_encoder(PROMPTS)

    def one_sequence(stage: str, conditions: torch.Tensor, scales: list[float]) -> torch.Tensor:
        return sample_stage(pipeline.stages[stage], pipeline.specs[stage], WINDOW, conditions, (text.sequence, text.mask),
                            scales, settings, generator, progress=False)

    tokens.semantic = one_sequence("semantic", stage_conditions(pipeline.specs["semantic"], tokens), [2.0, 1.5])[:, 0]
    coarse = one_sequence("coarse", stage_conditions(pipeline.specs["coarse"], tokens), [2.0, 1.5])
    fine = one_sequence("fine", stage_conditions(pipeline.specs["fine"], tokens, coarse_codes=coarse), [2.0])
    assert torch.equal(out.semantic, tokens.semantic) and torch.equal(out.codes, torch.cat([coarse, fine], dim=1))


def test_teacher_forcing_works_for_a_long_output(pipeline):
    generator = torch.Generator().manual_seed(2)
    semantic = torch.randint(0, pipeline.tokenizer.k, (1, LONG), generator=generator)
    coarse = torch.randint(0, pipeline.codec.spec.codebook_size, (1, pipeline.coarse_codebooks, LONG), generator=generator)
    out = pipeline("x", duration=seconds(pipeline, LONG), semantic_tokens=semantic, coarse_codes=coarse,
                   generator=torch.Generator().manual_seed(0), progress=False, output_type="codes")
    assert torch.equal(out.semantic, semantic) and torch.equal(out.codes[:, : pipeline.coarse_codebooks], coarse)
    assert out.codes.shape == (1, pipeline.codec.n_codebooks, LONG)


def test_a_window_bar_per_stage_only_for_several_windows(pipeline, capsys):
    pipeline("x", duration=seconds(pipeline, LONG), output_type="codes")
    err = capsys.readouterr().err
    assert all(f"AR {stage} windows" in err for stage in STAGES)
    pipeline("x", duration=seconds(pipeline, WINDOW), output_type="codes")
    err = capsys.readouterr().err
    assert "windows" not in err and "AR coarse" in err


@pytest.mark.parametrize("overlap", [-0.01, 0.21, 0.205, math.nan, math.inf, "0.05", True, [0.05]])
def test_a_bad_overlap_is_refused_before_any_model_runs(pipeline, overlap, monkeypatch):
    """0.21 s is 18.1 frames, 0.205 s rounds to 18: neither is less than the 18-frame window."""
    def no_compute(*args, **kwargs):
        raise AssertionError("a model ran")

    for model in (*pipeline.stages.values(), pipeline.text_encoder):
        monkeypatch.setattr(model, "forward", no_compute)
    monkeypatch.setattr(pipeline.codec, "encode", no_compute)
    with pytest.raises(GenerationError, match="overlap"):
        pipeline("a calm chorale", vocal=tone(0.7)[None], overlap=overlap, progress=False)


@pytest.mark.filterwarnings("ignore:the semantic tokenizer is not fitted")
def test_a_stage_window_is_cut_to_its_max_length(monkeypatch):
    """A coarse stage of max_length 12 (10 delay frames, 4 flattened) still makes a whole crop, in more windows; a
    stage that cannot hold one frame is refused before any model runs."""
    for pattern, frames in (("delay", 10), ("flatten", 4)):
        short = build_pipeline(ARConfig.from_yaml(CONFIG, [f"pattern={pattern}", CROP, "stages.coarse.max_length=12"]))
        calls = windows_of(short, monkeypatch)
        out = short("x", duration=seconds(short, WINDOW), progress=False, output_type="codes")
        assert out.codes.shape[-1] == WINDOW
        assert calls["coarse"] == [(w.length, w.known) for w in plan_windows(WINDOW, frames, round(frames / 4))]
        assert calls["fine"] == [(WINDOW, 0)]
    tiny = build_pipeline(ARConfig.from_yaml(CONFIG, [CROP, "stages.fine.max_length=4"]))
    with pytest.raises(GenerationError, match=r"fine stage's max_length=4 is less than the 6 steps of one frame"):
        tiny("x", progress=False)


@pytest.mark.filterwarnings("ignore:the semantic tokenizer is not fitted")
def test_hubert_tokens_are_windowed_at_their_own_rate(monkeypatch):
    """50 Hz semantic tokens: the semantic stage's window is the crop's 10 semantic frames, the coarse and fine stages'
    the crop's 18 codec frames, and the coarse stage reads the whole take's tokens aligned by time."""
    config = ARConfig.from_yaml(CONFIG, ["tokenizer.features=hubert", "tokenizer.id=tiny", "tokenizer.layer=1", CROP])
    hubert = sharpen(build_pipeline(config, seed=0))
    calls = windows_of(hubert, monkeypatch)
    vocal = tone(seconds(hubert, LONG), freqs=(330.0,))[None]
    out = hubert("a calm chorale", vocal=vocal, generator=torch.Generator().manual_seed(0), progress=False,
                 output_type="pt", text_guidance=2.0, vocal_guidance=2.0)
    semantic_frames = round(LONG * 50 / hubert.codec.frame_rate)
    assert out.semantic.shape == (1, semantic_frames) and out.codes.shape[-1] == LONG
    assert torch.isfinite(out.audios).all()
    assert calls["semantic"] == [(w.length, w.known) for w in plan_windows(semantic_frames, 10, 2)]
    assert calls["coarse"] == calls["fine"] == [(w.length, w.known) for w in plan_windows(LONG, WINDOW, 4)]
