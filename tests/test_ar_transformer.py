"""ARTransformer: T5 bucketing, causal masking, KV-cache decoding, save/load, input errors, context masking."""

from __future__ import annotations

import pytest
import torch

from discodiff.ar import ARTransformer, KVCache, relative_position_bucket
from discodiff.ar.layers import geglu_inner_dim
from discodiff.errors import ConfigError, GenerationError

K, V, T, CONTEXT_DIM, S = 3, 11, 13, 6, 5
TINY = dict(n_codebooks=K, vocab_size=V, d_model=16, n_layers=2, n_heads=2, condition_vocab_sizes=[4, 6], max_length=32,
            rel_buckets=8, rel_max_distance=16)


def build(**overrides) -> ARTransformer:
    """A tiny model with weights (and the relative-bias table) drawn large enough that every path moves the logits."""
    torch.manual_seed(0)
    model = ARTransformer(**{**TINY, **overrides}).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(std=0.3, generator=generator)
    return model


def inputs(batch: int = 2, length: int = T, seed: int = 0, with_context: bool = False) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V + 1, (batch, K, length), generator=generator)  # V = the empty token is valid input
    conditions = torch.stack([torch.randint(0, 5, (batch, length), generator=generator),  # 4 = stream 0's null
                              torch.randint(0, 7, (batch, length), generator=generator)], dim=1)
    out = dict(tokens=tokens, conditions=conditions)
    if with_context:
        out["context"] = torch.randn(batch, S, CONTEXT_DIM, generator=generator)
        mask = torch.ones(batch, S, dtype=torch.bool)
        mask[0, 3:] = False  # the first row is padded after 3 tokens
        out["context_mask"] = mask
    return out


def logits(model, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs).logits


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16)])
def test_relative_position_bucket_equals_t5(num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    offsets = torch.arange(-300, 301)
    expected = T5Attention._relative_position_bucket(offsets, bidirectional=False, num_buckets=num_buckets,
                                                     max_distance=max_distance)
    ours = relative_position_bucket(offsets, num_buckets, max_distance)
    assert torch.equal(ours, expected.long())
    assert ours.min() == 0 and ours.max() == num_buckets - 1


def test_position_bias_reads_the_shared_table_causally():
    model = build(context_dim=CONTEXT_DIM)
    queries, keys = torch.arange(20, 25), torch.arange(0, 25)
    bias = model.position_bias(queries, keys)
    offsets = keys[None] - queries[:, None]
    expected = model.position_bias.table.weight[relative_position_bucket(offsets, 8, 16)].permute(2, 0, 1)
    past = offsets <= 0
    assert bias.shape == (1, TINY["n_heads"], 5, 25)
    assert torch.equal(bias[0][:, past], expected[:, past]) and torch.isneginf(bias[0][:, ~past]).all()
    assert sum(isinstance(m, type(model.position_bias)) for m in model.modules()) == 1  # one table for all layers


def test_shapes_and_geglu_width():
    model = build(context_dim=CONTEXT_DIM)
    out = logits(model, **inputs(with_context=True))
    assert out.shape == (2, K, T, V) and torch.isfinite(out).all()
    assert model.empty_token_id == V
    assert geglu_inner_dim(256) == 680 and model.blocks[0].feed_forward.to_out.in_features == geglu_inner_dim(16)
    assert ARTransformer.count_parameters(**TINY) == build().num_parameters()


@pytest.mark.parametrize("with_context", [False, True])
def test_causal_masking(with_context):
    model = build(context_dim=CONTEXT_DIM if with_context else None)
    kwargs = inputs(with_context=with_context)
    before = logits(model, **kwargs)
    for t in (5, T - 1):
        changed = {**kwargs, "tokens": kwargs["tokens"].clone()}
        changed["tokens"][:, :, t] = (changed["tokens"][:, :, t] + 1) % (V + 1)
        after = logits(model, **changed)
        assert torch.equal(after[:, :, :t], before[:, :, :t])
        assert not torch.allclose(after[:, :, t:], before[:, :, t:])  # the change does reach its own and later positions


@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_matches_full_forward(with_context, chunk):
    model = build(context_dim=CONTEXT_DIM if with_context else None)
    kwargs = inputs(with_context=with_context)
    full = logits(model, **kwargs)

    cache = model.new_cache(batch_size=2, max_length=T + 2)
    pointers = [buffer.data_ptr() for buffer in cache.keys + cache.values]
    pieces = []
    for start in range(0, T, chunk):
        step = dict(tokens=kwargs["tokens"][..., start:start + chunk], conditions=kwargs["conditions"][..., start:start + chunk],
                    cache=cache)
        if with_context and start == 0:  # the context is projected once, on the cache's first forward
            step.update(context=kwargs["context"], context_mask=kwargs["context_mask"])
        pieces.append(logits(model, **step))
        assert cache.length == min(start + chunk, T)
    assert torch.allclose(torch.cat(pieces, dim=2), full, atol=1e-5, rtol=1e-5)
    assert [buffer.data_ptr() for buffer in cache.keys + cache.values] == pointers
    assert all(buffer.shape == (2, TINY["n_heads"], T + 2, 8) for buffer in cache.keys + cache.values)
    if with_context:
        assert cache.context_keys is not None and len(cache.context_keys) == TINY["n_layers"]


def test_kv_cache_rewind_and_errors():
    model = build()
    kwargs = inputs()
    full = logits(model, **kwargs)
    cache = model.new_cache(batch_size=2, max_length=T)
    logits(model, tokens=kwargs["tokens"][..., :6], conditions=kwargs["conditions"][..., :6], cache=cache)
    logits(model, tokens=kwargs["tokens"][..., :6].flip(-1), conditions=kwargs["conditions"][..., :6], cache=cache, start=2)
    redo = logits(model, tokens=kwargs["tokens"][..., 2:], conditions=kwargs["conditions"][..., 2:], cache=cache, start=2)
    assert torch.allclose(redo, full[:, :, 2:], atol=1e-5, rtol=1e-5)  # rewinding overwrites the slots by index
    with pytest.raises(GenerationError, match="too short"):
        logits(model, **inputs(length=2), cache=cache)
    with pytest.raises(GenerationError, match="skip"):
        logits(model, **inputs(length=1), cache=model.new_cache(2), start=3)
    with pytest.raises(GenerationError, match="batch"):
        logits(model, **inputs(batch=3, length=2), cache=model.new_cache(2))
    with pytest.raises(GenerationError, match="max_length"):
        model.new_cache(2, max_length=TINY["max_length"] + 1)
    assert isinstance(cache, KVCache)


def test_cache_context_is_projected_once():
    model = build(context_dim=CONTEXT_DIM)
    kwargs = inputs(with_context=True)
    cache = model.new_cache(2)
    logits(model, tokens=kwargs["tokens"][..., :2], conditions=kwargs["conditions"][..., :2], cache=cache,
           context=kwargs["context"], context_mask=kwargs["context_mask"])
    keys = cache.context_keys[0]
    logits(model, tokens=kwargs["tokens"][..., 2:3], conditions=kwargs["conditions"][..., 2:3], cache=cache,
           context=kwargs["context"], context_mask=kwargs["context_mask"])  # the same tensor may be passed again
    assert cache.context_keys[0] is keys
    with pytest.raises(GenerationError, match="another context"):
        logits(model, tokens=kwargs["tokens"][..., 3:4], conditions=kwargs["conditions"][..., 3:4], cache=cache,
               context=kwargs["context"].clone())
    late = model.new_cache(2)
    logits(model, tokens=kwargs["tokens"][..., :2], conditions=kwargs["conditions"][..., :2], cache=late)
    with pytest.raises(GenerationError, match="first forward"):
        logits(model, tokens=kwargs["tokens"][..., 2:3], conditions=kwargs["conditions"][..., 2:3], cache=late,
               context=kwargs["context"])


def test_save_load_bit_identical(tmp_path):
    model = build(context_dim=CONTEXT_DIM)
    kwargs = inputs(with_context=True)
    model.save_pretrained(tmp_path / "ar")
    loaded = ARTransformer.from_pretrained(tmp_path / "ar").eval()
    assert loaded.config.n_codebooks == K and loaded.config.context_dim == CONTEXT_DIM
    assert torch.equal(logits(loaded, **kwargs), logits(model, **kwargs))


def test_input_errors_are_named():
    model = build(context_dim=CONTEXT_DIM)
    good = inputs()
    too_high = good["tokens"].clone()
    too_high[0, 1, 2] = V + 1
    with pytest.raises(GenerationError, match=r"token ids must be in 0 … 11.*to 12"):
        model(tokens=too_high, conditions=good["conditions"])
    with pytest.raises(GenerationError, match="token ids"):
        model(tokens=good["tokens"] - 1, conditions=good["conditions"])
    with pytest.raises(GenerationError, match="max_length=32"):
        model(**inputs(length=TINY["max_length"] + 1))
    with pytest.raises(GenerationError, match=r"2 codebooks.*n_codebooks=3"):
        model(tokens=good["tokens"][:, :2], conditions=good["conditions"])
    with pytest.raises(GenerationError, match="integer tensor"):
        model(tokens=good["tokens"].float(), conditions=good["conditions"])
    with pytest.raises(GenerationError, match=r"condition stream 1 ids must be in 0 … 6"):
        model(tokens=good["tokens"], conditions=good["conditions"].clamp(max=4) + torch.tensor([0, 3])[None, :, None])
    with pytest.raises(GenerationError, match=r"conditions \[B, 2, T\] are required"):
        model(tokens=good["tokens"])
    with pytest.raises(GenerationError, match=r"integer tensor \[2, 2, 13\]"):
        model(tokens=good["tokens"], conditions=good["conditions"][:, :1])
    with pytest.raises(GenerationError, match="no condition streams"):
        build(condition_vocab_sizes=[])(**good)
    with pytest.raises(GenerationError, match="context must be"):
        model(**good, context=torch.zeros(2, S, CONTEXT_DIM + 1))
    with pytest.raises(GenerationError, match="no cross-attention"):
        build()(**good, context=torch.zeros(2, S, CONTEXT_DIM))
    with pytest.raises(ConfigError, match="n_heads=3"):
        ARTransformer(**{**TINY, "n_heads": 3})
    with pytest.raises(ConfigError, match="n_codebooks"):
        ARTransformer(**{**TINY, "n_codebooks": 0})


def test_condition_streams_are_added_per_step_and_causally():
    """Changing stream c at step t changes the logits of step t (and later), never earlier ones; the null id is a
    condition of its own."""
    model = build()
    kwargs = inputs()
    before = logits(model, **kwargs)
    for stream, null in enumerate(model.condition_null_ids):
        changed = kwargs["conditions"].clone()
        changed[:, stream, 7] = null if int(changed[0, stream, 7]) != null else 0
        after = logits(model, **{**kwargs, "conditions": changed})
        assert torch.equal(after[..., :7, :], before[..., :7, :])
        assert not torch.allclose(after[..., 7, :], before[..., 7, :])


def test_padded_context_positions_do_not_matter():
    model = build(context_dim=CONTEXT_DIM)
    kwargs = inputs(with_context=True)
    before = logits(model, **kwargs)
    changed = kwargs["context"].clone()
    changed[0, 3:] = 1e3 * torch.randn(S - 3, CONTEXT_DIM)
    assert torch.equal(logits(model, **{**kwargs, "context": changed}), before)
    changed[1, 0] += 1.0  # a valid position does matter
    assert not torch.allclose(logits(model, **{**kwargs, "context": changed})[1], before[1])


def test_empty_context_row_means_no_text():
    model = build(context_dim=CONTEXT_DIM)
    kwargs = inputs(with_context=True)
    kwargs["context_mask"][1] = False
    with_empty = logits(model, **kwargs)
    without = logits(model, tokens=kwargs["tokens"], conditions=kwargs["conditions"])
    assert torch.isfinite(with_empty).all()
    assert torch.equal(with_empty[1], without[1])
    assert not torch.allclose(with_empty[0], without[0])


def test_gradient_checkpointing_matches():
    model = build(context_dim=CONTEXT_DIM).train()
    kwargs = inputs(with_context=True)

    def gradients():
        model.zero_grad()
        model(**kwargs).logits.square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = gradients()
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))
