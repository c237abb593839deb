"""Overfit: the three tiny AR stages, trained on two rendered chorale clips, reproduce their tokens with the right
prompt and vocal, and not with the other clip's.

Measured (2 s clips of bach/bwv2.6 and bach/bwv66.6, tiny codec, configs/ar_tiny.yaml with d_model 64, 4 heads,
tokenizer k=32 fitted on the two clips; 300 AdamW steps per stage at one-cycle 3e-3, teacher forcing, greedy
decoding with the KV cache): every stage reproduces 100% of its tokens given the true earlier tokens, with either
pattern; with the other clip's prompt and vocal it reproduces that clip instead (100%) and matches its own on 4–5%
(chance 1/32 and 1/64). The whole chain (semantic → coarse → fine, each fed the generated tokens) gives all nine
codebooks back.
"""

from __future__ import annotations

import pytest
import torch

from discodiff.ar import ARConfig, SamplingSettings, sample_stage
from discodiff.conditioning.semantic import SemanticTokenizer
from discodiff.ar.build import build_pipeline
from discodiff.ar.stages import StageTokens, stage_conditions, stage_target
from discodiff.audio import load_audio
from discodiff.data import find_stem_pairs, read_captions

CLIPS = ["bach/bwv2.6", "bach/bwv66.6"]
STEPS = 300
GREEDY = SamplingSettings(top_k=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def overfit(tmp_path_factory, pattern: str, seconds: float):
    """A pipeline whose three stages were overfitted on the clips, their true tokens and the encoded prompts."""
    from discodiff.corpus.render import render_corpus

    root = tmp_path_factory.mktemp(f"ar-clips-{pattern}")
    render_corpus(CLIPS, root, seconds=seconds, seed=0, progress=False)
    pairs = find_stem_pairs(root)
    prompts = [read_captions(root / "captions.jsonl")[p.track_id][0] for p in pairs]
    sizes = [f"stages.{stage}.{key}={value}" for stage in ("semantic", "coarse", "fine")
             for key, value in (("d_model", 64), ("n_heads", 4))]
    pipeline = build_pipeline(ARConfig.from_yaml("configs/ar_tiny.yaml", [f"pattern={pattern}", "tokenizer.k=32", *sizes]),
                              seed=0)
    accompaniment = torch.stack([load_audio(p.accompaniment[0]) for p in pairs])
    vocals = torch.stack([load_audio(p.vocals) for p in pairs])
    latents, codes = pipeline.codec.encode_with_codes(accompaniment, progress=False)
    vocal_latents = pipeline.codec.encode(vocals, progress=False)
    dim = pipeline.features.dim
    frames = torch.cat([latents[:, :dim], vocal_latents[:, :dim]], dim=-1).transpose(1, 2)
    pipeline.tokenizer, pipeline.tokenizer_fitted = SemanticTokenizer.fit([frames], k=32, seed=0,
                                                                          extractor=pipeline.features), True
    mask = torch.ones(2, codes.shape[-1], dtype=torch.bool)
    tokens = StageTokens(codes, pipeline.semantic_tokens(latents), pipeline.semantic_tokens(vocal_latents), mask, mask,
                         pipeline.codec.frame_rate, pipeline.semantic_rate)
    with torch.no_grad():
        text = pipeline.text_encoder(prompts)
    for name, spec in pipeline.specs.items():
        model = pipeline.stages[name]
        target, frame_mask = stage_target(spec, tokens)
        inputs, labels = spec.teacher_forcing(target)
        conditions = spec.conditions_at_steps(stage_conditions(spec, tokens), target.shape[-1])
        label_mask = spec.label_mask(frame_mask)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=STEPS, pct_start=0.1)
        model.train()
        for _ in range(STEPS):
            loss = spec.loss(model(inputs, conditions, text.sequence, text.mask).logits, labels, label_mask).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
    return pipeline, tokens, (text.sequence, text.mask)


def swapped(tokens: StageTokens) -> StageTokens:
    """The other clip's tokens (and so its vocal) in each row."""
    return StageTokens(tokens.codes.flip(0), tokens.semantic.flip(0), tokens.vocal_semantic.flip(0), tokens.frame_mask,
                       tokens.semantic_mask, tokens.codec_rate, tokens.semantic_rate)


def check_stages_reproduce_their_tokens(pipeline, tokens, text) -> None:
    for name, spec in pipeline.specs.items():
        target, _ = stage_target(spec, tokens)

        def generate(given: StageTokens, prompt) -> torch.Tensor:
            return sample_stage(pipeline.stages[name], spec, target.shape[-1], stage_conditions(spec, given), prompt, [],
                                GREEDY, torch.Generator().manual_seed(0), progress=False)

        right = (generate(tokens, text) == target).float().mean().item()
        other = generate(swapped(tokens), (text[0].flip(0), text[1].flip(0)))
        wrong, theirs = (other == target).float().mean().item(), (other == target.flip(0)).float().mean().item()
        print(f"{name} ({pipeline.pattern}): right conditions {right:.3f}, swapped: own {wrong:.3f}, other clip's {theirs:.3f}")
        assert right >= 0.95 and theirs >= 0.95 and wrong <= 0.2, (name, right, wrong, theirs)


@pytest.fixture(scope="module")
def delay_model(tmp_path_factory):
    return overfit(tmp_path_factory, "delay", seconds=2.0)


def test_each_stage_reproduces_its_tokens_with_the_right_conditions(delay_model):
    check_stages_reproduce_their_tokens(*delay_model)


def test_the_whole_chain_gives_the_codes_back(delay_model):
    """Semantic → coarse → fine through the pipeline's own stage chaining (each stage fed the generated tokens)."""
    pipeline, tokens, text = delay_model
    specs = pipeline.specs
    semantic = sample_stage(pipeline.stages["semantic"], specs["semantic"], tokens.codes.shape[-1],
                            stage_conditions(specs["semantic"], tokens), text, [], GREEDY, progress=False)[:, 0]
    generated = StageTokens(None, semantic, tokens.vocal_semantic, tokens.frame_mask, tokens.semantic_mask,
                            tokens.codec_rate, tokens.semantic_rate)
    coarse = sample_stage(pipeline.stages["coarse"], specs["coarse"], tokens.codes.shape[-1],
                          stage_conditions(specs["coarse"], generated), text, [], GREEDY, progress=False)
    fine = sample_stage(pipeline.stages["fine"], specs["fine"], tokens.codes.shape[-1],
                        stage_conditions(specs["fine"], generated, coarse_codes=coarse), text, [], GREEDY, progress=False)
    match = (torch.cat([coarse, fine], dim=1) == tokens.codes).float().mean().item()
    print(f"whole chain: {match:.3f} of all code positions")
    assert match >= 0.95


@pytest.mark.slow
def test_the_flatten_pattern_overfits_too(tmp_path_factory):
    check_stages_reproduce_their_tokens(*overfit(tmp_path_factory, "flatten", seconds=1.0))
