"""Conditioners on tiny random encoders: shapes, padding, freezing, save/load, offline errors, vocal tokens."""

import math
import time
from pathlib import Path

import pytest
import torch

from discodiff.conditioning import (
    ClapTextConditioner,
    ConditionerNotFoundError,
    DacLatentFeatures,
    FlanT5Conditioner,
    VocalConditioner,
    build_text_conditioner,
    build_tiny_clap_conditioner,
    build_tiny_t5_conditioner,
    load_text_encoder,
)
from discodiff.latents import LatentStats
from discodiff.models.embeddings import sinusoidal_embedding
from conftest import tone

PROMPTS = ["a calm piano ballad with soft strings", "drums", "upbeat funk, slap bass and brass"]
ATOL = 1e-5  # float rounding between differently shaped batches; padding leaks would be O(0.1)


@pytest.fixture(scope="module", params=["t5", "clap"])
def text_conditioner(request):
    return build_tiny_t5_conditioner(seed=0) if request.param == "t5" else build_tiny_clap_conditioner(seed=0)


def tiny_vocal_conditioner(**overrides) -> VocalConditioner:
    config = dict(in_channels=72, hidden_channels=32, out_dim=16, num_blocks=2, downsample=1, norm_groups=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VocalConditioner(**(config | overrides))


# --- text ---------------------------------------------------------------------------------------------


def test_text_shapes_and_masks(text_conditioner):
    condition = text_conditioner(PROMPTS)
    lengths = [len(text_conditioner.tokenizer(prompt).input_ids) for prompt in PROMPTS]
    B, S = len(PROMPTS), max(lengths)
    assert condition.sequence.shape == (B, S, text_conditioner.sequence_dim)
    assert condition.pooled.shape == (B, text_conditioner.pooled_dim)
    assert condition.mask.dtype == torch.bool and condition.mask.sum(dim=1).tolist() == lengths
    assert torch.equal(condition.mask, torch.arange(S)[None] < torch.tensor(lengths)[:, None])
    assert condition.sequence[~condition.mask].abs().max() == 0  # padding carries nothing
    assert condition.sequence[condition.mask].abs().amax(dim=-1).min() > 0


def test_padding_changes_neither_pooled_nor_valid_tokens(text_conditioner):
    batched = text_conditioner(PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        alone = text_conditioner([prompt])
        valid = int(alone.mask.sum())
        assert torch.allclose(alone.pooled[0], batched.pooled[row], atol=ATOL)
        assert torch.allclose(alone.sequence[0, :valid], batched.sequence[row, :valid], atol=ATOL)


def test_t5_pooled_is_mean_of_valid_tokens():
    conditioner = build_tiny_t5_conditioner(seed=0)
    condition = conditioner(PROMPTS)
    for row in range(len(PROMPTS)):
        valid = condition.sequence[row, condition.mask[row]]
        assert torch.allclose(condition.pooled[row], valid.mean(dim=0), atol=ATOL)


def test_clap_pooled_is_unit_norm_projected_embedding():
    conditioner = build_tiny_clap_conditioner(seed=0)
    condition = conditioner(PROMPTS)
    tokens = conditioner.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = conditioner.model.get_text_features(**tokens).pooler_output
    assert torch.allclose(condition.pooled, expected, atol=ATOL)
    assert torch.allclose(condition.pooled.norm(dim=-1), torch.ones(len(PROMPTS)), atol=ATOL)


def test_prompts_are_truncated_to_max_length():
    conditioner = build_tiny_t5_conditioner(seed=0, max_length=8)
    condition = conditioner(["a prompt much longer than eight bytes", "short"])
    assert condition.sequence.shape[1] == 8 and condition.mask[0].all()


def test_single_prompt_and_empty_batch(text_conditioner):
    assert torch.equal(text_conditioner("drums").pooled, text_conditioner(["drums"]).pooled)
    with pytest.raises(ValueError, match="prompts is empty"):
        text_conditioner([])


def test_text_conditioner_is_frozen(text_conditioner):
    text_conditioner.train()
    assert not any(module.training for module in text_conditioner.modules())
    assert not any(parameter.requires_grad for parameter in text_conditioner.parameters())
    with torch.enable_grad():
        condition = text_conditioner(PROMPTS)
    assert not condition.sequence.requires_grad and not condition.pooled.requires_grad


@pytest.mark.parametrize(
    "build, conditioner_class, tokenizer_class",
    [
        (build_tiny_t5_conditioner, FlanT5Conditioner, "ByT5Tokenizer"),
        (build_tiny_clap_conditioner, ClapTextConditioner, "RobertaTokenizer"),
    ],
)
def test_save_load_round_trip_offline(tmp_path, build, conditioner_class, tokenizer_class):
    conditioner = build(seed=3)
    conditioner.save_pretrained(tmp_path)
    loaded = conditioner_class.from_pretrained(tmp_path)
    assert type(loaded.tokenizer).__name__ == tokenizer_class and loaded.source == str(tmp_path)
    assert (loaded.sequence_dim, loaded.pooled_dim) == (conditioner.sequence_dim, conditioner.pooled_dim)
    expected, actual = conditioner(PROMPTS), loaded(PROMPTS)
    for name in ("sequence", "mask", "pooled"):
        assert torch.equal(getattr(expected, name), getattr(actual, name)), name


def test_build_text_conditioner_dispatches_on_kind(tmp_path):
    build_tiny_clap_conditioner(seed=0).save_pretrained(tmp_path)
    conditioner = build_text_conditioner("clap", tmp_path, max_length=16)
    assert isinstance(conditioner, ClapTextConditioner) and conditioner.max_length == 16
    with pytest.raises(ValueError, match=r"unknown text conditioner kind 'bert'.*'t5', 'clap'"):
        build_text_conditioner("bert", tmp_path)


def test_tiny_id_is_one_fixed_text_encoder(tmp_path):
    from discodiff.build import build_pipeline
    from discodiff.config import DiscoDiffConfig

    reference = build_tiny_t5_conditioner(seed=0, max_length=16)
    tiny = load_text_encoder("t5", "tiny", max_length=16)
    assert tiny.max_length == 16 and load_text_encoder("t5", "tiny").max_length == reference.default_max_length
    config = DiscoDiffConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    for encoder in (tiny, build_pipeline(config, seed=3).text_encoder):  # 'tiny' does not follow the build seed
        state = encoder.model.state_dict()
        assert state.keys() == reference.model.state_dict().keys()
        assert all(torch.equal(state[key], value) for key, value in reference.model.state_dict().items())
    build_tiny_t5_conditioner(seed=3).save_pretrained(tmp_path / "seed-3")  # another tiny encoder: by path
    loaded = load_text_encoder("t5", str(tmp_path / "seed-3"), max_length=16)
    assert loaded.source == str(tmp_path / "seed-3") and not torch.equal(
        loaded.model.shared.weight, reference.model.shared.weight)


@pytest.mark.parametrize("kind", ["t5", "clap"])
@pytest.mark.parametrize("missing", ["local", "hub"])
def test_missing_weights_give_one_line_error(tmp_path, kind, missing):
    id_or_path = str(tmp_path / "no-such-encoder") if missing == "local" else "discodiff-tests/no-such-encoder"
    start = time.perf_counter()
    with pytest.raises(ConditionerNotFoundError) as error:
        build_text_conditioner(kind, id_or_path)
    assert time.perf_counter() - start < 5.0
    message = str(error.value)
    assert "\n" not in message and id_or_path in message and "--text-encoder path/to/dir" in message


def test_encoder_of_the_wrong_kind_is_an_error(tmp_path):
    build_tiny_t5_conditioner(seed=0).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 't5' model but ClapTextConditioner loads 'clap' models"):
        build_text_conditioner("clap", tmp_path)


def test_directory_without_tokenizer_is_an_error(tmp_path):
    build_tiny_t5_conditioner(seed=0).model.save_pretrained(tmp_path)  # weights only
    with pytest.raises(ConditionerNotFoundError, match="holds no tokenizer"):
        FlanT5Conditioner.from_pretrained(tmp_path)


# --- vocal --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("downsample, frames", [(1, 20), (2, 20), (4, 21)])
def test_vocal_tokens_shape_and_mask(downsample, frames):
    conditioner = tiny_vocal_conditioner(downsample=downsample)
    output = conditioner(torch.randn(2, 72, frames))
    tokens = math.ceil(frames / downsample)
    assert conditioner.num_tokens(frames) == tokens
    assert output.sequence.shape == (2, tokens, 16)
    assert output.mask.dtype == torch.bool and output.mask.shape == (2, tokens) and output.mask.all()


@pytest.mark.parametrize("downsample", [1, 2, 3])
def test_padded_vocal_gives_the_tokens_of_the_unpadded_one(downsample):
    conditioner = tiny_vocal_conditioner(downsample=downsample)
    frames, padded_frames = 13, 24
    features = torch.randn(1, 72, frames)
    padded = torch.cat([features, 10 * torch.randn(1, 72, padded_frames - frames)], dim=-1)  # loud garbage
    frame_mask = torch.arange(padded_frames)[None] < frames
    expected, actual = conditioner(features), conditioner(padded, frame_mask)
    valid = conditioner.num_tokens(frames)
    assert torch.equal(actual.mask, frame_mask[:, ::downsample]) and int(actual.mask.sum()) == valid
    assert torch.allclose(actual.sequence[:, :valid], expected.sequence, atol=ATOL)
    assert actual.sequence[:, valid:].abs().max() == 0


@pytest.mark.parametrize("downsample", [1, 2])
def test_vocal_positions_follow_input_frames(downsample):
    """Identical features at different frames differ by exactly the sinusoidal embedding of their input frames."""
    conditioner = tiny_vocal_conditioner(downsample=downsample)
    constant = torch.randn(1, 72, 1).expand(1, 72, 40)
    sequence = conditioner(constant).sequence[0]
    i, j = 5, 9  # interior tokens: their receptive fields see the same constant input
    positions = sinusoidal_embedding(torch.tensor([i, j]) * downsample, 16)
    assert (sequence[i] - sequence[j]).abs().max() > 0.1
    assert torch.allclose(sequence[i] - sequence[j], positions[0] - positions[1], atol=ATOL)


def test_vocal_save_load_round_trip(tmp_path):
    conditioner = tiny_vocal_conditioner(downsample=2)
    conditioner.save_pretrained(tmp_path)
    loaded = VocalConditioner.from_pretrained(tmp_path)
    assert loaded.config.downsample == 2 and loaded.config.hidden_channels == 32
    features = torch.randn(2, 72, 17)
    assert torch.equal(conditioner(features).sequence, loaded(features).sequence)


def test_vocal_gradients_reach_every_parameter(tiny_codec):
    conditioner = tiny_vocal_conditioner(downsample=2)
    features = DacLatentFeatures(tiny_codec)(tone(0.2)[None], chunk_seconds=None)  # encoded in inference mode
    conditioner(features).sequence.square().mean().backward()
    for name, parameter in conditioner.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().max() > 0, name


def test_vocal_rejects_wrong_inputs():
    conditioner = tiny_vocal_conditioner()
    with pytest.raises(ValueError, match=r"\[B, 72, L\]"):
        conditioner(torch.randn(2, 64, 10))
    with pytest.raises(ValueError, match="frame_mask must be bool"):
        conditioner(torch.randn(2, 72, 10), torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="norm_groups=8 must divide hidden_channels=36"):
        tiny_vocal_conditioner(hidden_channels=36)


def test_dac_latent_features(tiny_codec):
    audio = torch.stack([tone(0.5, seed=0), tone(0.5, seed=1)])
    extractor = DacLatentFeatures(tiny_codec)
    features = extractor(audio, chunk_seconds=None)
    assert (extractor.feature_dim, extractor.sample_rate) == (72, 44100)
    assert features.shape == (2, 72, tiny_codec.frames_for(audio.shape[-1]))
    assert not features.is_inference()  # usable as input to layers that are trained
    assert torch.equal(features, tiny_codec.encode(audio, chunk_seconds=None))
    stats = LatentStats.fit([features], codebook_dim=tiny_codec.codebook_dim)
    normalised = DacLatentFeatures(tiny_codec, stats)(audio, chunk_seconds=None)
    assert torch.allclose(normalised, stats.normalize(features))
