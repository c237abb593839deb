"""Candidates: N accompaniments in one batch, ranked by vocal fit (and CLAP score); the API and `sample --candidates`."""

from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from discodiff.audio import save_audio
from discodiff.cli import app
from discodiff.errors import GenerationError
from discodiff.evaluation.candidates import fit_score, generate_candidates
from discodiff.evaluation.vocal_fit import vocal_fit
from conftest import tone
from test_pipeline import generators, randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 44100


def melody(seconds: float = 2.0) -> torch.Tensor:
    """A sung-like line: four notes of A minor, 0.5 s each, ``[T]``."""
    notes = [220.0, 261.6, 329.6, 261.6]
    t = torch.arange(int(0.5 * RATE)) / RATE
    line = torch.cat([0.4 * torch.sin(2 * torch.pi * f * t) for f in notes])
    return line.repeat(int(np.ceil(seconds / 2.0)))[: int(seconds * RATE)]


@dataclass
class Output:
    audios: np.ndarray


class FixedPipeline:
    """A stand-in 'model' whose candidate ``i`` is ``clips[seed_i % len(clips)]``: the ranking is then known."""

    sample_rate = RATE

    def __init__(self, clips):
        self.clips, self.calls = clips, []

    def __call__(self, prompts, vocal=None, duration=None, generator=None, progress=True, **options):
        self.calls.append((list(prompts), options))
        seeds = [g.initial_seed() for g in generator]
        return Output(np.stack([self.clips[s % len(self.clips)][None].numpy() for s in seeds]))


def test_candidates_are_ranked_by_their_fit_with_the_vocal():
    vocal = melody()
    noise = torch.randn(vocal.shape[-1], generator=torch.Generator().manual_seed(0)) * 0.3
    fitting = 0.5 * melody() + 0.3 * torch.sin(2 * torch.pi * 110.0 * torch.arange(vocal.shape[-1]) / RATE)
    unrelated = 0.4 * torch.sin(2 * torch.pi * 233.1 * torch.arange(vocal.shape[-1]) / RATE)  # B flat drone
    pipe = FixedPipeline([noise, fitting, unrelated])
    ranked = generate_candidates(pipe, "organ", vocal=vocal, num_candidates=3, seed=0, num_inference_steps=2)
    assert pipe.calls == [(["organ"] * 3, {"num_inference_steps": 2})]  # one batched call, options passed through
    assert [c.rank for c in ranked.candidates] == [1, 2, 3] and ranked.ranked_by == "vocal fit"
    assert ranked.best.seed == 1  # the accompaniment that doubles the melody
    scores = [c.score for c in ranked.candidates]
    assert scores == sorted(scores, reverse=True)
    for candidate in ranked.candidates:
        expected = vocal_fit(vocal, candidate.audio, RATE)
        assert candidate.fit == pytest.approx(expected, abs=1e-9) and candidate.score == pytest.approx(fit_score(expected))


def test_without_vocal_or_clap_the_order_is_the_generation_order():
    pipe = FixedPipeline([tone(1.0)[0], tone(1.0, freqs=(300.0,))[0]])
    ranked = generate_candidates(pipe, "organ", duration=1.0, num_candidates=2, seed=4)
    assert [c.seed for c in ranked.candidates] == [4, 5] and ranked.candidates[0].score is None
    assert "generation order" in ranked.ranked_by


def test_clap_score_joins_the_ranking():
    from transformers import ClapFeatureExtractor, ClapProcessor

    from discodiff.conditioning.tiny import build_tiny_clap_model, build_tiny_clap_tokenizer
    from discodiff.evaluation.embedders import ClapEmbedder

    clap = ClapEmbedder(build_tiny_clap_model(seed=0), ClapProcessor(feature_extractor=ClapFeatureExtractor(),
                                                                     tokenizer=build_tiny_clap_tokenizer()))
    vocal = melody()
    pipe = FixedPipeline([0.5 * melody(), tone(2.0)[0]])
    ranked = generate_candidates(pipe, "organ", vocal=vocal, num_candidates=2, clap=clap)
    assert ranked.ranked_by == "vocal fit + CLAP score"
    for candidate in ranked.candidates:
        assert -1 <= candidate.clap_score <= 1
        assert candidate.score == pytest.approx(fit_score(candidate.fit) + candidate.clap_score)


@pytest.mark.parametrize("arguments, message", [
    (dict(num_candidates=0), "num_candidates"), (dict(num_candidates=17), "num_candidates"),
    (dict(num_candidates=2.5), "num_candidates"), (dict(seed=-1), "seed"), (dict(prompt=["a", "b"]), "one string"),
])
def test_bad_requests_are_refused_before_generating(arguments, message):
    pipe = FixedPipeline([tone(1.0)[0]])
    with pytest.raises(GenerationError, match=message):
        generate_candidates(pipe, **{"prompt": "organ", **arguments})
    assert pipe.calls == []


def test_candidates_of_a_real_pipeline_are_its_samples(tmp_path):
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    pipe = build_pipeline(DiscoDiffConfig.from_yaml("configs/tiny.yaml"), seed=0)
    randomize_(pipe.primary, 1)
    randomize_(pipe.secondary, 2)
    vocal = melody(1.0)
    ranked = generate_candidates(pipe, "organ", vocal=vocal, num_candidates=3, seed=5, num_inference_steps=2,
                                 progress=False)
    alone = pipe(["organ"], vocal=vocal, generator=generators(1, 6), num_inference_steps=2, progress=False).audios[0]
    by_seed = {c.seed: c for c in ranked.candidates}
    assert sorted(by_seed) == [5, 6, 7] and all(c.audio.shape == (1, vocal.shape[-1]) for c in ranked.candidates)
    np.testing.assert_allclose(by_seed[6].audio.numpy(), alone, atol=1e-4)


def test_sample_cli_writes_ranked_candidates(tmp_path):
    runner = CliRunner()
    model = tmp_path / "tiny"
    assert runner.invoke(app, ["new-model", str(model), "--config", "configs/tiny.yaml"]).exit_code == 0
    vocal = tmp_path / "vocal.wav"
    save_audio(vocal, melody(1.0)[None], RATE)
    out, mix = tmp_path / "out" / "acc.wav", tmp_path / "out" / "mix.wav"
    result = runner.invoke(app, ["sample", "--model", str(model), "--prompt", "organ", "--vocal", str(vocal), "--out",
                                 str(out), "--mix", str(mix), "--candidates", "2", "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 candidates ranked by vocal fit" in result.output and "fit " in result.output
    for name in ("acc_rank1.wav", "acc_rank2.wav", "mix_rank1.wav", "mix_rank2.wav"):
        assert sf.info(str(tmp_path / "out" / name)).frames == RATE
    fits = [float(line.split("; fit ")[1].split()[0]) for line in result.output.splitlines() if "; fit " in line]
    assert len(fits) == 2 and fits[0] >= fits[1]


@pytest.mark.parametrize("extra, message", [
    (["--candidates", "2", "--prompts-file", "PROMPTS"], "one prompt"),
    (["--clap", "laion/clap-htsat-unfused"], "--candidates N"),
])
def test_sample_cli_refuses_bad_candidate_requests(tmp_path, extra, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("organ\nstrings\n")
    extra = [str(prompts) if part == "PROMPTS" else part for part in extra]
    base = ["sample", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "a.wav")]
    base += [] if "--prompts-file" in extra else ["--prompt", "organ"]
    result = CliRunner().invoke(app, base + extra)
    assert result.exit_code != 0 and message in result.output


def test_a_take_without_voiced_frames_is_refused_before_generating():
    from discodiff.errors import AudioError

    pipe = FixedPipeline([tone(1.0)[0]])
    noise = torch.randn(RATE, generator=torch.Generator().manual_seed(1)) * 1e-3
    with pytest.raises(AudioError, match="no voiced frames"):
        generate_candidates(pipe, "organ", vocal=noise, num_candidates=2)
    assert pipe.calls == []
