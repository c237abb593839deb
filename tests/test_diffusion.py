"""The v-objective, compositional CFG and the sampler glue to diffusers schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.utils import is_torchsde_available

from discodiff.guidance import condition_dropout, draw_normal, guidance_drop_masks, guided_prediction, repeat_batch, split_stages
from discodiff.diffusion import (
    SCHEDULERS,
    add_noise,
    alpha_sigma,
    guided_denoiser,
    make_scheduler,
    predict_noise,
    predict_x0,
    sample,
    sample_timesteps,
    step_time,
    v_diffusion_loss,
    v_loss,
    v_target,
)
from discodiff.diffusion import sampling

needs_torchsde = pytest.mark.skipif(not is_torchsde_available(), reason="cosine-dpm needs torchsde")
ALL_SCHEDULERS = [pytest.param(n, marks=needs_torchsde) if n == "cosine-dpm" else n for n in SCHEDULERS]
ODE_SCHEDULERS = ("ddim", "dpm++", "euler")  # deterministic: the exact denoiser keeps the implied noise fixed
ORACLE_TOLERANCE = 1e-4  # relative L2 error of the returned sample against x0
# Relative drift of the implied noise across steps. Euler steps the VE sample in float32 from
# σ_ve ≈ 2e4, whose first update cancels terms of that size: ~2e-4 drift, harmless for sampling.
DRIFT_TOLERANCE = 1e-3


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return ((estimate - reference).norm() / reference.norm()).item()


def exact_denoiser(x0: torch.Tensor, implied_noise: list[torch.Tensor]):
    """The ideal model for a single data point ``x0``: the true v of ``(x_t, t)``; records ``ε̂`` per call."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (a[:, None, None] for a in alpha_sigma(t))
        noise = (x_t - alpha * x0) / sigma.clamp_min(1e-12)
        implied_noise.append(noise)
        return alpha * noise - sigma * x0

    return denoise


def run_oracle(name: str, steps: int) -> tuple[float, float]:
    """``(relative error of the sample, largest relative drift of the implied noise across steps)``."""
    x0 = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(0))
    implied_noise: list[torch.Tensor] = []
    result = sample(
        exact_denoiser(x0, implied_noise), x0.shape, make_scheduler(name), steps,
        generator=torch.Generator().manual_seed(1), progress=False,
    )
    drift = max(relative_error(n, implied_noise[0]) for n in implied_noise)
    return relative_error(result, x0), drift


def smooth_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, non-trivial stand-in model: the output depends on both inputs."""
    return 0.5 * x_t * t[:, None, None] - 0.1 * x_t.roll(1, dims=-1)


# --- objective ----------------------------------------------------------------------------------


def test_noising_targets_and_predictions_are_consistent():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 16, generator=g), torch.randn(4, 3, 16, generator=g)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    alpha, sigma = alpha_sigma(t)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(4))
    x_t, v = add_noise(x0, noise, t), v_target(x0, noise, t)
    torch.testing.assert_close(predict_x0(x_t, v, t), x0)
    torch.testing.assert_close(predict_noise(x_t, v, t), noise)
    torch.testing.assert_close(x_t[0], x0[0])  # t = 0: clean, v = ε
    torch.testing.assert_close(v[0], noise[0])
    torch.testing.assert_close(x_t[3], noise[3], atol=1e-6, rtol=0)  # t = 1: pure noise, v = −x0
    torch.testing.assert_close(v[3], -x0[3], atol=1e-6, rtol=0)


def test_add_noise_rejects_t_of_wrong_shape():
    with pytest.raises(ValueError, match="t must be"):
        add_noise(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(3))


def test_v_loss_kinds_are_per_sample_means():
    prediction, target = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    l1, l2 = v_loss(prediction, target, "l1"), v_loss(prediction, target, "l2")
    assert l1.shape == l2.shape == (3,)
    torch.testing.assert_close(l1, (prediction - target).abs().flatten(1).mean(1))
    torch.testing.assert_close(l2, (prediction - target).square().flatten(1).mean(1))
    with pytest.raises(ValueError, match="l1"):
        v_loss(prediction, target, "huber")


def test_v_loss_mask_ignores_padded_frames():
    prediction, target = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    frames = torch.ones(2, 1, 10, dtype=torch.bool)
    frames[0, :, 6:] = False  # sample 0 is padded after frame 6
    frames[1] = False  # sample 1 is all padding
    loss = v_loss(prediction, target, "l1", mask=frames)
    torch.testing.assert_close(loss[0], (prediction[0, :, :6] - target[0, :, :6]).abs().mean())
    assert loss[1] == 0
    channels = torch.ones(2, 4, 10)
    channels[:, 1:] = 0  # a per-element float mask keeps channel 0 only
    torch.testing.assert_close(v_loss(prediction, target, "l2", mask=channels), (prediction - target)[:, 0].square().mean(1))
    with pytest.raises(ValueError, match="mask"):
        v_loss(prediction, target, mask=torch.ones(2, 3, 10))


def test_condition_dropout_rate_and_independence():
    n, p = 20000, 0.3
    drops = condition_dropout(2 * n, p, torch.Generator().manual_seed(0)).view(n, 2).float()
    assert abs(drops.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / (2 * n))
    both = (drops[:, 0] * drops[:, 1]).mean().item()  # neighbours in a batch are independent
    assert abs(both - p * p) < 4 * math.sqrt(p * p * (1 - p * p) / n)
    assert not condition_dropout(100, 0.0, torch.Generator().manual_seed(0)).any()
    assert condition_dropout(100, 1.0, torch.Generator().manual_seed(0)).all()
    with pytest.raises(ValueError, match="p must be"):
        condition_dropout(4, 1.5)


def test_random_draws_follow_the_generators():
    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return sample_timesteps(64, g), condition_dropout(64, 0.5, g), draw_normal((2, 3, 4), g)

    for a, b in zip(draws(0), draws(0)):
        assert torch.equal(a, b)
    assert not torch.equal(draws(0)[0], draws(1)[0])
    t = draws(0)[0]
    assert t.dtype == torch.float32 and ((t >= 0) & (t < 1)).all()
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    batch = draw_normal((2, 3, 4), generators)
    assert torch.equal(batch[1:], draw_normal((1, 3, 4), torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="one per sample"):
        draw_normal((3, 3, 4), generators)


def test_v_diffusion_loss_is_zero_for_the_exact_denoiser_and_reproducible():
    x0 = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(0))
    loss = v_diffusion_loss(exact_denoiser(x0, []), x0, torch.Generator().manual_seed(1))
    assert loss.shape == (3,) and loss.abs().max() < 1e-5
    again = v_diffusion_loss(smooth_denoiser, x0, torch.Generator().manual_seed(1), kind="l2")
    assert torch.equal(again, v_diffusion_loss(smooth_denoiser, x0, torch.Generator().manual_seed(1), kind="l2"))
    assert (again > 0).all()


def test_v_diffusion_loss_secondary_sees_clean_prefix():
    primary, secondary = torch.randn(2, 8, 16), torch.randn(2, 64, 16)
    seen = []

    def secondary_model(model_input, t):
        seen.append(model_input)
        return model_input[:, 8:]

    t = torch.tensor([0.25, 0.75])
    loss = v_diffusion_loss(secondary_model, secondary, torch.Generator().manual_seed(0), clean_prefix=primary, t=t)
    assert loss.shape == (2,)
    assert seen[0].shape == (2, 72, 16) and torch.equal(seen[0][:, :8], primary)
    noise = draw_normal(secondary.shape, torch.Generator().manual_seed(0))  # fixed t: the generator only draws ε
    torch.testing.assert_close(seen[0][:, 8:], add_noise(secondary, noise, t))
    with pytest.raises(ValueError, match="same shape"):
        v_diffusion_loss(lambda x, t: x, secondary, clean_prefix=primary)


# --- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("name", ALL_SCHEDULERS)
def test_exact_denoiser_recovers_x0(name, steps):
    error, drift = run_oracle(name, steps)
    assert error < ORACLE_TOLERANCE, f"{name} at {steps} steps: relative error {error:.2e}"
    if name in ODE_SCHEDULERS:  # every step, not only the last, must see the true noise level
        assert drift < DRIFT_TOLERANCE, f"{name} at {steps} steps: implied noise drifted by {drift:.2e}"


@pytest.mark.parametrize("name", ODE_SCHEDULERS)
def test_oracle_catches_a_wrong_time_mapping(name, monkeypatch):
    monkeypatch.setattr(sampling, "step_time", lambda scheduler, i: float(scheduler.timesteps[i]) / 1000)
    error, drift = run_oracle(name, 10)
    assert error > 10 * ORACLE_TOLERANCE and drift > 10 * DRIFT_TOLERANCE


@needs_torchsde
def test_cosine_dpm_time_is_its_noise_preconditioning():
    scheduler = make_scheduler("cosine-dpm")
    scheduler.set_timesteps(20)
    times = torch.tensor([step_time(scheduler, i) for i in range(20)], dtype=torch.float64)
    torch.testing.assert_close(times, scheduler.timesteps.double(), rtol=0, atol=1e-6)


@pytest.mark.skipif(is_torchsde_available(), reason="torchsde is installed")
def test_cosine_dpm_without_torchsde_says_how_to_fix():
    with pytest.raises(ImportError, match="pip install torchsde"):
        make_scheduler("cosine-dpm")


def test_make_scheduler_names_and_overrides():
    with pytest.raises(ValueError, match="choose one of cosine-dpm, ddim, dpm\\+\\+, euler"):
        make_scheduler("heun")
    scheduler = make_scheduler("dpm++", solver_order=3)
    assert scheduler.config.solver_order == 3 and scheduler.config.prediction_type == "v_prediction"


def test_sample_rejects_schedulers_that_do_not_predict_v():
    with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
        sample(smooth_denoiser, (1, 2, 8), make_scheduler("ddim", prediction_type="epsilon"), 2, progress=False)


def test_sample_is_reentrant_and_leaves_the_scheduler_alone():
    scheduler = make_scheduler("dpm++", algorithm_type="sde-dpmsolver++")  # stochastic steps use the generator too
    scheduler.set_timesteps(7)  # state left over from elsewhere must not matter

    def run():
        return sample(smooth_denoiser, (2, 4, 16), scheduler, 12, torch.Generator().manual_seed(3), progress=False)

    first, second = run(), run()
    assert torch.equal(first, second)
    assert len(scheduler.timesteps) == 7
    other = sample(smooth_denoiser, (2, 4, 16), scheduler, 12, torch.Generator().manual_seed(4), progress=False)
    assert not torch.allclose(first, other)


def test_sample_with_one_generator_per_sample_matches_sampling_alone():
    scheduler = make_scheduler("dpm++", algorithm_type="sde-dpmsolver++")
    batch = sample(
        smooth_denoiser, (3, 4, 16), scheduler, 8, [torch.Generator().manual_seed(s) for s in (10, 11, 12)], progress=False
    )
    alone = sample(smooth_denoiser, (1, 4, 16), scheduler, 8, torch.Generator().manual_seed(11), progress=False)
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-6, atol=1e-6)


def test_sample_uses_initial_noise_and_checks_shapes():
    noise = torch.randn(1, 4, 16)
    scheduler = make_scheduler("ddim")
    assert torch.equal(
        sample(smooth_denoiser, noise.shape, scheduler, 5, initial_noise=noise, progress=False),
        sample(smooth_denoiser, noise.shape, scheduler, 5, initial_noise=noise.clone(), progress=False),
    )
    with pytest.raises(ValueError, match="initial_noise"):
        sample(smooth_denoiser, (2, 4, 16), scheduler, 5, initial_noise=noise, progress=False)
    with pytest.raises(ValueError, match="denoise returned"):
        sample(lambda x, t: x[:, :2], (1, 4, 16), scheduler, 5, progress=False)


def test_progress_bar_can_be_silenced(capsys):
    sample(smooth_denoiser, (1, 2, 8), make_scheduler("euler"), 3, progress=False)
    assert capsys.readouterr() == ("", "")
    sample(smooth_denoiser, (1, 2, 8), make_scheduler("euler"), 3, progress=True)
    assert "3/3" in capsys.readouterr().err


# --- guidance -----------------------------------------------------------------------------------


def test_guidance_masks_nest_contexts():
    text, vocal = guidance_drop_masks(batch_size=2, num_contexts=2)
    # rows: unconditional ×2 (drop both), text-only ×2 (drop vocal), full ×2 (drop nothing)
    assert text.tolist() == [True, True, False, False, False, False]
    assert vocal.tolist() == [True, True, True, True, False, False]
    (only,) = guidance_drop_masks(batch_size=3, num_contexts=1)
    assert only.tolist() == [True] * 3 + [False] * 3


def test_guided_prediction_scales():
    v_uncond, v_text, v_full = torch.randn(3, 2, 4, 8).unbind(0)
    assert torch.equal(guided_prediction([v_uncond, v_text, v_full], [1.0, 1.0]), v_full)
    torch.testing.assert_close(guided_prediction([v_uncond, v_text, v_full], [0.0, 0.0]), v_uncond)
    torch.testing.assert_close(guided_prediction([v_uncond, v_text, v_full], [1.0, 0.0]), v_text)
    torch.testing.assert_close(
        guided_prediction([v_uncond, v_text, v_full], [3.0, 2.0]), v_uncond + 3 * (v_text - v_uncond) + 2 * (v_full - v_text)
    )
    torch.testing.assert_close(guided_prediction([v_uncond, v_text], [4.0]), v_uncond + 4 * (v_text - v_uncond))
    with pytest.raises(ValueError, match="one more prediction"):
        guided_prediction([v_uncond, v_text], [1.0, 1.0])


def test_guided_denoiser_runs_one_batched_forward():
    calls = []
    text_offset, vocal_offset = torch.tensor(1.0), torch.tensor(10.0)

    def model(x, t, condition_dropped):
        calls.append((x, t, condition_dropped))
        text_dropped, vocal_dropped = (d[:, None, None].float() for d in condition_dropped)
        return x * t[:, None, None] + (1 - text_dropped) * text_offset + (1 - vocal_dropped) * vocal_offset

    x, t = torch.randn(2, 4, 8), torch.tensor([0.2, 0.9])
    guided = guided_denoiser(model, [3.0, 2.0])(x, t)
    assert len(calls) == 1
    rows, times, _ = calls[0]
    assert torch.equal(rows, repeat_batch(x, 3)) and torch.equal(times, t.repeat(3))
    v_uncond, v_text, v_full = split_stages(model(rows, times, guidance_drop_masks(2, 2)), 2)
    torch.testing.assert_close(v_text - v_uncond, torch.ones_like(x))
    torch.testing.assert_close(guided, x * t[:, None, None] + 3 * text_offset + 2 * vocal_offset)
    assert torch.equal(guided_denoiser(model, [1.0, 1.0])(x, t), v_full)
