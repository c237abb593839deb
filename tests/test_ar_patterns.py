"""AR codebook patterns (delay, flatten) and frame-rate alignment by time: exact layouts on hand-written examples,
round trips, loss masks, sampler bookkeeping, joint-vocabulary offsets, errors; both patterns feed ARTransformer."""

from __future__ import annotations

import pytest
import torch

from discodiff.ar import ARTransformer, DelayPattern, FlattenPattern, align_by_time, make_pattern
from discodiff.errors import ConfigError, GenerationError

SHAPES = [(1, 1), (1, 5), (3, 1), (4, 7), (9, 13)]  # (K, T)


def random_codes(n_codebooks: int, num_frames: int, batch: int = 2, vocab: int = 50) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n_codebooks * 100 + num_frames)
    return torch.randint(0, vocab, (batch, n_codebooks, num_frames), generator=generator)


# hand example: codebook k of frame f holds 10·k + f
HAND = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]])  # [1, K=3, T=4]
E = 99  # the empty token of the hand example


def test_delay_layout_on_a_hand_example():
    sequence = DelayPattern(3).build(HAND, empty_id=E)
    assert torch.equal(sequence, torch.tensor([[
        [0, 1, 2, 3, E, E],
        [E, 10, 11, 12, 13, E],
        [E, E, 20, 21, 22, 23],
    ]]))
    assert sequence.dtype == HAND.dtype


@pytest.mark.parametrize("n_codebooks, num_frames", SHAPES)
def test_delay_round_trip_mask_and_frame_index(n_codebooks, num_frames):
    pattern = DelayPattern(n_codebooks)
    codes = random_codes(n_codebooks, num_frames)
    sequence = pattern.build(codes, empty_id=50)
    assert sequence.shape == (2, n_codebooks, num_frames + n_codebooks - 1)
    assert pattern.sequence_length(num_frames) == sequence.shape[-1]
    assert pattern.num_frames(sequence.shape[-1]) == num_frames
    assert torch.equal(pattern.revert(sequence), codes)

    mask = pattern.valid_mask(num_frames)
    assert mask.shape == (n_codebooks, num_frames + n_codebooks - 1) and mask.dtype == torch.bool
    assert int(mask.sum()) == n_codebooks * num_frames
    assert bool((sequence[:, ~mask] == 50).all())  # the holes hold the empty token, and only the holes
    # the frame index says where every real token came from
    frames = pattern.frame_index(num_frames)
    k, s = torch.nonzero(mask, as_tuple=True)
    assert torch.equal(sequence[:, k, s], codes[:, k, frames[k, s]])


def test_delay_revert_ignores_the_holes():
    pattern = DelayPattern(3)
    sequence = pattern.build(HAND, empty_id=E)
    sequence[:, ~pattern.valid_mask(4)] = 7  # a sampler may leave anything there
    assert torch.equal(pattern.revert(sequence), HAND)


def test_delay_step_positions_on_the_hand_example():
    pattern = DelayPattern(3)
    expected = {0: ([0], [0]), 1: ([0, 1], [1, 0]), 2: ([0, 1, 2], [2, 1, 0]), 3: ([0, 1, 2], [3, 2, 1]),
                4: ([1, 2], [3, 2]), 5: ([2], [3])}
    sequence = pattern.build(HAND, empty_id=E)
    for step, (codebooks, frames) in expected.items():
        got_codebooks, got_frames = pattern.step_positions(step, 4)
        assert got_codebooks.tolist() == codebooks and got_frames.tolist() == frames, step
        assert torch.equal(sequence[0, got_codebooks, step], HAND[0, got_codebooks, got_frames])
    with pytest.raises(GenerationError, match="step must be an integer in 0 … 5"):
        pattern.step_positions(6, 4)


def test_flatten_order_on_a_hand_example():
    stream = FlattenPattern(3).build(HAND)
    assert torch.equal(stream, torch.tensor([[[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]]]))
    assert FlattenPattern(3).codebook_index(7).tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("n_codebooks, num_frames", SHAPES)
def test_flatten_round_trip_and_mask(n_codebooks, num_frames):
    pattern = FlattenPattern(n_codebooks)
    codes = random_codes(n_codebooks, num_frames)
    stream = pattern.build(codes)
    assert stream.shape == (2, 1, n_codebooks * num_frames)
    assert pattern.sequence_length(num_frames) == stream.shape[-1]
    assert pattern.num_frames(stream.shape[-1]) == num_frames
    assert torch.equal(pattern.revert(stream), codes)
    positions = torch.arange(stream.shape[-1])  # position f·K + k holds codebook k of frame f
    assert torch.equal(stream[:, 0], codes[:, pattern.codebook_index(stream.shape[-1]), positions // n_codebooks])
    mask = pattern.valid_mask(num_frames)
    assert mask.shape == (1, n_codebooks * num_frames) and int(mask.sum()) == n_codebooks * num_frames


def test_flatten_token_offsets_round_trip():
    pattern, vocab = FlattenPattern(3), 100
    stream = pattern.build(HAND)
    joint = pattern.offset_tokens(stream, vocab)
    assert joint[0, 0, :6].tolist() == [0, 110, 220, 1, 111, 221]
    assert pattern.token_offsets(4, vocab).tolist() == [0, 100, 200, 0]
    assert torch.equal(pattern.strip_offsets(joint, vocab), stream)
    codes = random_codes(3, 9, vocab=vocab)
    joint = pattern.offset_tokens(pattern.build(codes), vocab)
    assert int(joint.max()) < 3 * vocab
    assert torch.equal(pattern.revert(pattern.strip_offsets(joint, vocab)), codes)
    # a partial stream (a sampler midway) works too
    assert torch.equal(pattern.strip_offsets(joint[..., :5], vocab), pattern.build(codes)[..., :5])


def test_flatten_offset_errors():
    pattern = FlattenPattern(3)
    with pytest.raises(GenerationError, match="must be in 0 … 99"):
        pattern.offset_tokens(torch.tensor([[[0, 100]]]), 100)
    with pytest.raises(GenerationError, match="token 5 at stream position 1 \\(codebook 1\\).*ids 100 … 199"):
        pattern.strip_offsets(torch.tensor([[[0, 5, 200]]]), 100)


def test_make_pattern_by_name_and_errors():
    assert isinstance(make_pattern("delay", 4), DelayPattern) and make_pattern("delay", 4).stream_codebooks == 4
    assert isinstance(make_pattern("flatten", 4), FlattenPattern) and make_pattern("flatten", 4).stream_codebooks == 1
    with pytest.raises(ConfigError, match="unknown codebook pattern 'parallel'; choose one of delay, flatten"):
        make_pattern("parallel", 4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="n_codebooks as a positive integer"):
            make_pattern("delay", bad)


@pytest.mark.parametrize("name", ["delay", "flatten"])
def test_shape_errors(name):
    pattern = make_pattern(name, 3)
    build = (lambda codes: pattern.build(codes, empty_id=E)) if name == "delay" else pattern.build
    with pytest.raises(GenerationError, match=r"codes must be an integer tensor \[B, 3, length\].*\(1, 2, 4\)"):
        build(HAND[:, :2])  # wrong K
    with pytest.raises(GenerationError, match="codes must be an integer tensor.*float32"):
        build(HAND.float())
    with pytest.raises(GenerationError, match="codes must be an integer tensor"):
        build(HAND[0])  # no batch dimension
    with pytest.raises(GenerationError, match="at least one sequence and one position"):
        build(HAND[..., :0])
    with pytest.raises(GenerationError, match="must be an integer tensor"):
        pattern.revert(HAND.float())


def test_revert_length_errors():
    with pytest.raises(GenerationError, match="at least 3 steps"):
        DelayPattern(3).revert(torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(GenerationError, match="a multiple of 3 steps, got 7"):
        FlattenPattern(3).revert(torch.zeros(1, 1, 7, dtype=torch.long))
    with pytest.raises(GenerationError, match="empty_id must be an integer"):
        DelayPattern(3).build(HAND, empty_id=1.5)


def test_both_patterns_feed_the_transformer():
    """The delay sequence with the model's empty token, and the flattened stream in the joint vocabulary, are valid
    ARTransformer input of the shapes the patterns promise."""
    n_codebooks, vocab, num_frames = 3, 8, 5
    codes = random_codes(n_codebooks, num_frames, vocab=vocab)
    tiny = dict(d_model=16, n_layers=1, n_heads=2, max_length=32, rel_buckets=8, rel_max_distance=16)

    delay = make_pattern("delay", n_codebooks)
    model = ARTransformer(n_codebooks=delay.stream_codebooks, vocab_size=vocab, **tiny).eval()
    sequence = delay.build(codes, empty_id=model.empty_token_id)
    with torch.no_grad():
        logits = model(sequence).logits
    assert logits.shape == (2, n_codebooks, num_frames + n_codebooks - 1, vocab)

    flatten = make_pattern("flatten", n_codebooks)
    model = ARTransformer(n_codebooks=flatten.stream_codebooks, vocab_size=n_codebooks * vocab, **tiny).eval()
    stream = flatten.offset_tokens(flatten.build(codes), vocab)
    with torch.no_grad():
        logits = model(stream).logits
    assert logits.shape == (2, 1, n_codebooks * num_frames, n_codebooks * vocab)


def test_align_by_time_known_values():
    # 10 s: 862 codec frames at 44100/512 Hz, 500 semantic frames at 50 Hz
    codec_rate = 44100 / 512
    index = align_by_time(862, codec_rate, 50.0, num_source_frames=500)
    assert index.shape == (862,) and index.dtype == torch.long
    assert int(index[0]) == 0 and int(index[-1]) == 499  # the last target centre (10.002 s) is past the source: clamped
    assert bool((index.diff() >= 0).all()) and bool((index.diff() <= 1).all())
    # codec frame i's centre (i + ½)·512/44100 s lies in semantic frame floor(centre · 50)
    assert index[:6].tolist() == [0, 0, 1, 2, 2, 3]  # centres 5.8, 17.4, 29.0, 40.6, 52.2, 63.9 ms; 20 ms frames
    assert int(index[86]) == 50  # 86.5/86.13 s = 1.0043 s
    # the other direction: 50 Hz target frames ← 86.13 Hz source (centre 10 ms → source frame 0, 30 ms → 2, …)
    back = align_by_time(500, 50.0, 86.13, num_source_frames=862)
    assert back[:4].tolist() == [0, 2, 4, 6] and int(back[-1]) <= 861 and bool((back.diff() >= 0).all())
    # identical rates → identity; a centre exactly on a boundary goes to the later frame
    assert torch.equal(align_by_time(17, 86.13, 86.13, num_source_frames=17), torch.arange(17))
    assert align_by_time(3, 50.0, 100.0, num_source_frames=6).tolist() == [1, 3, 5]
    assert align_by_time(0, 50.0, 100.0, num_source_frames=1).shape == (0,)


def test_align_by_time_errors():
    with pytest.raises(ConfigError, match="target_rate must be a positive, finite"):
        align_by_time(4, 0.0, 50.0, num_source_frames=4)
    with pytest.raises(ConfigError, match="source_rate must be a positive, finite"):
        align_by_time(4, 50.0, float("nan"), num_source_frames=4)
    with pytest.raises(ConfigError, match="num_target_frames must be a non-negative integer"):
        align_by_time(-1, 50.0, 50.0, num_source_frames=4)
    with pytest.raises(ConfigError, match="num_source_frames must be a positive integer"):
        align_by_time(4, 50.0, 50.0, num_source_frames=0)
