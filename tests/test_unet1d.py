"""UNet1DConditionModel: shapes, masking, learned nulls, save/load, gradient checkpointing, input validation."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from discodiff.models import UNet1DConditionModel, UNet1DOutput

TEXT_DIM, VOCAL_DIM, POOLED_DIM = 16, 12, 16
TINY = dict(
    in_channels=8,
    out_channels=8,
    block_channels=(8, 16, 16),
    layers_per_block=1,
    self_attention_levels=(False, False, True),
    cross_attention_levels=(False, True, True),
    attention_head_dim=8,
    context_dims=(TEXT_DIM, VOCAL_DIM),
    pooled_dim=POOLED_DIM,
    null_context_lengths=(2, 1),
    time_embed_dim=32,
    norm_groups=4,
)


def build(**overrides) -> UNet1DConditionModel:
    """A tiny U-Net whose zero-initialised weights are randomised, so every path reaches the output."""
    torch.manual_seed(0)
    model = UNet1DConditionModel(**{**TINY, **overrides}).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(std=0.1, generator=generator)
    return model


def inputs(length: int = 37, in_channels: int = 8, seed: int = 0) -> dict:
    """Forward kwargs for a batch of 2 with 5 text and 9 vocal tokens; text tokens 3: of sample 0 are padding."""
    batch, text_len, vocal_len = 2, 5, 9
    generator = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(batch, text_len, dtype=torch.bool)
    text_mask[0, 3:] = False
    return dict(
        sample=torch.randn(batch, in_channels, length, generator=generator),
        timestep=torch.rand(batch, generator=generator),
        contexts=[
            torch.randn(batch, text_len, TEXT_DIM, generator=generator),
            torch.randn(batch, vocal_len, VOCAL_DIM, generator=generator),
        ],
        context_masks=[text_mask, None],
        pooled=torch.randn(batch, POOLED_DIM, generator=generator),
    )


@pytest.fixture(scope="module")
def model() -> UNet1DConditionModel:
    return build()


@torch.no_grad()
def predict(model: UNet1DConditionModel, **kwargs) -> torch.Tensor:
    return model(**kwargs).sample


@pytest.mark.parametrize("length", [37, 64, 101])
@pytest.mark.parametrize("channels", [(8, 8), (72, 64)], ids=["primary", "secondary"])
def test_output_length_equals_input_length(channels, length):
    in_channels, out_channels = channels
    model = build(in_channels=in_channels, out_channels=out_channels)
    output = model(**inputs(length=length, in_channels=in_channels))
    assert isinstance(output, UNet1DOutput)
    assert output.sample.shape == (2, out_channels, length)
    assert torch.isfinite(output.sample).all() and output.sample.abs().sum() > 0


def test_return_dict_false_gives_tuple(model):
    with torch.no_grad():
        output = model(**inputs(), return_dict=False)
    assert isinstance(output, tuple) and torch.equal(output[0], predict(model, **inputs()))


def test_masked_padding_tokens_do_not_change_output(model):
    kwargs = inputs()
    reference = predict(model, **kwargs)
    text, vocal = kwargs["contexts"]
    generator = torch.Generator().manual_seed(2)
    padded_text = torch.cat([text, 100 * torch.randn(2, 4, TEXT_DIM, generator=generator)], dim=1)
    padded_mask = torch.cat([kwargs["context_masks"][0], torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    padded_vocal = torch.cat([vocal, 100 * torch.randn(2, 3, VOCAL_DIM, generator=generator)], dim=1)
    vocal_mask = torch.arange(vocal.shape[1] + 3).expand(2, -1) < vocal.shape[1]
    kwargs.update(contexts=[padded_text, padded_vocal], context_masks=[padded_mask, vocal_mask])
    torch.testing.assert_close(predict(model, **kwargs), reference, atol=1e-5, rtol=0)


def test_masks_are_used(model):
    kwargs = inputs()
    reference = predict(model, **kwargs)
    kwargs["context_masks"] = [torch.ones(2, 5, dtype=torch.bool), None]
    assert not torch.allclose(predict(model, **kwargs)[0], reference[0], atol=1e-4)


def test_dropped_sample_does_not_depend_on_its_conditions(model):
    dropped = [torch.tensor([True, False]), torch.tensor([True, False])]
    first = inputs(seed=0)
    second = inputs(seed=1)
    second.update(sample=first["sample"], timestep=first["timestep"])
    second["context_masks"] = [torch.rand(2, 5) > 0.5, torch.rand(2, 9) > 0.5]
    second["context_masks"][0][:, 0] = second["context_masks"][1][:, 0] = True
    second["contexts"][0][0, 1:] = float("nan")  # even non-finite values of a dropped row must not leak
    out_first = predict(model, **first, condition_dropped=dropped)
    out_second = predict(model, **second, condition_dropped=dropped)
    assert torch.equal(out_first[0], out_second[0])
    assert not torch.allclose(out_first[1], out_second[1], atol=1e-4)


@pytest.mark.parametrize("null_context_lengths", [(2, 1), (8, 1)], ids=["null-shorter", "null-longer"])
def test_per_sample_dropping_only_affects_dropped_rows(null_context_lengths):
    model = build(null_context_lengths=null_context_lengths)
    kwargs = inputs()
    kept = predict(model, **kwargs)
    dropped = predict(model, **kwargs, condition_dropped=[torch.tensor([True, False]), None])
    torch.testing.assert_close(dropped[1], kept[1], atol=1e-5, rtol=0)
    assert not torch.allclose(dropped[0], kept[0], atol=1e-4)

    alone = {key: value[:1] for key, value in kwargs.items() if key not in ("contexts", "context_masks")}
    alone.update(contexts=[None, kwargs["contexts"][1][:1]], context_masks=[None, None])
    torch.testing.assert_close(dropped[:1], predict(model, **alone), atol=1e-5, rtol=0)


def test_none_context_means_dropped_for_every_sample(model):
    kwargs = inputs()
    all_dropped = predict(model, **kwargs, condition_dropped=[torch.ones(2, dtype=torch.bool), None])
    kwargs.update(contexts=[None, kwargs["contexts"][1]], context_masks=None)
    torch.testing.assert_close(predict(model, **kwargs), all_dropped, atol=1e-5, rtol=0)


def test_pooled_is_dropped_with_its_context_only(model):
    kwargs = inputs()
    other_pooled = {**kwargs, "pooled": torch.randn(2, POOLED_DIM)}

    def outputs(dropped: list) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            predict(model, **kwargs, condition_dropped=dropped),
            predict(model, **other_pooled, condition_dropped=dropped),
        )

    all_rows = torch.ones(2, dtype=torch.bool)
    assert not torch.allclose(*outputs([None, all_rows]), atol=1e-4)  # vocal dropped: pooled (text) still used
    assert torch.equal(*outputs([all_rows, None]))  # text dropped: its pooled vector too


def test_pooled_and_timestep_change_output(model):
    kwargs = inputs()
    reference = predict(model, **kwargs)
    assert not torch.allclose(predict(model, **{**kwargs, "pooled": torch.randn(2, POOLED_DIM)}), reference, atol=1e-4)
    assert not torch.allclose(predict(model, **{**kwargs, "timestep": kwargs["timestep"] + 0.1}), reference, atol=1e-4)
    scalar_time = predict(model, **{**kwargs, "timestep": 0.3})
    torch.testing.assert_close(scalar_time, predict(model, **{**kwargs, "timestep": torch.full((2,), 0.3)}))


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = UNet1DConditionModel.from_pretrained(tmp_path).eval()
    assert torch.equal(predict(loaded, **inputs()), predict(model, **inputs()))
    assert loaded.num_parameters() == model.num_parameters() == UNet1DConditionModel.count_parameters(**TINY)


def loss_and_gradients(model: UNet1DConditionModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**inputs(), condition_dropped=[torch.tensor([True, False]), None]).sample.square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_loss_and_gradients():
    model = build().train()
    loss, gradients = loss_and_gradients(model)
    calls = []

    def checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    model.enable_gradient_checkpointing(checkpoint)
    assert model.is_gradient_checkpointing
    checkpointed_loss, checkpointed_gradients = loss_and_gradients(model)
    assert {"ResnetBlock1D", "TransformerBlock1D"} <= set(calls)
    torch.testing.assert_close(checkpointed_loss, loss, atol=1e-5, rtol=0)
    assert checkpointed_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, atol=1e-5, rtol=0, msg=name)


def test_null_conditions_receive_gradients_only_when_dropped():
    model = build().train()
    kwargs = inputs()
    model(**kwargs).sample.square().mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.null_conditions.parameters())

    model.zero_grad(set_to_none=True)
    dropped = [torch.tensor([True, False]), torch.tensor([False, True])]
    model(**kwargs, condition_dropped=dropped).sample.square().mean().backward()
    for name, parameter in model.null_conditions.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (dict(sample=torch.randn(2, 7, 37)), "sample"),
        (dict(timestep=torch.rand(3)), "timestep"),
        (dict(timestep=torch.tensor([1, 2])), "timestep"),
        (dict(contexts=[torch.randn(2, 5, TEXT_DIM)]), "contexts"),
        (dict(contexts=[torch.randn(2, 5, TEXT_DIM), torch.randn(2, 9, VOCAL_DIM + 1)]), r"contexts\[1\]"),
        (dict(context_masks=[torch.ones(2, 5), None]), r"context_masks\[0\]"),
        (dict(context_masks=[torch.zeros(2, 5, dtype=torch.bool), None]), r"context_masks\[0\]"),
        (dict(pooled=torch.randn(2, POOLED_DIM + 1)), "pooled"),
        (dict(condition_dropped=[torch.tensor([True]), None]), r"condition_dropped\[0\]"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(model, change, argument):
    with pytest.raises(ValueError, match=argument):
        model(**{**inputs(), **change})


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (dict(self_attention_levels=(False, True)), "self_attention_levels"),
        (dict(null_context_lengths=(1,)), "null_context_lengths"),
        (dict(pooled_context_index=2), "pooled_context_index"),
        (dict(block_channels=(8, 16, 24), norm_groups=16), "norm_groups"),
        (dict(attention_head_dim=6), "attention_head_dim"),
    ],
)
def test_bad_config_raises_value_error_naming_the_argument(change, argument):
    with pytest.raises(ValueError, match=argument):
        UNet1DConditionModel(**{**TINY, **change})


def test_unconditional_model():
    model = build(context_dims=(), pooled_dim=None, null_context_lengths=None, cross_attention_levels=(False,) * 3)
    sample = torch.randn(2, 8, 50)
    assert predict(model, sample=sample, timestep=torch.rand(2)).shape == sample.shape


def test_first_level_narrower_than_the_output_warns():
    with pytest.warns(UserWarning, match="narrower than out_channels=64"):
        UNet1DConditionModel(in_channels=72, out_channels=64, block_channels=(16, 32), layers_per_block=1,
                             self_attention_levels=(False, False), cross_attention_levels=(False, False), attention_head_dim=8,
                             norm_groups=4)
