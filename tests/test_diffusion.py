"""Schedule, respacing and loop behaviour of the diffusion (beyond the reference fixtures)."""

import numpy as np
import pytest
import torch

from disco.diffusion import GaussianDiffusion, ddim_timesteps


@pytest.mark.parametrize("steps", [1, 7, 10, 25, 50, 100, 150, 250, 333, 500, 1000])
def test_ddim_respacing_gives_exactly_steps_timesteps(steps):
    d = GaussianDiffusion(steps)
    assert d.diffusion_steps == (1000 // steps) * steps
    assert len(d.timestep_map) == d.num_timesteps == steps
    stride = d.diffusion_steps // steps
    assert d.timestep_map == list(range(0, d.diffusion_steps, stride))


def test_respacing_250_matches_disco_default():
    d = GaussianDiffusion(250)
    assert d.timestep_map[:3] == [0, 4, 8] and d.timestep_map[-1] == 996
    assert d.scaled_timestep(249) == 996.0


def test_rescaled_timesteps_use_the_1000_range():
    d = GaussianDiffusion(300)  # 900 base steps: network times are scaled by 1000/900
    assert d.diffusion_steps == 900
    assert d.scaled_timestep(299) == pytest.approx(897 * 1000 / 900)


def test_respaced_alphas_are_products_of_linear_betas():
    d = GaussianDiffusion(10)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(d.alphas_cumprod, abar[::100], rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, "10"])
def test_bad_steps_are_refused_with_the_parameter_named(bad):
    with pytest.raises(ValueError, match="steps"):
        GaussianDiffusion(bad)


def test_impossible_respacing_is_refused():
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(1000, 999)


def toy_model(x, t):
    # eps prediction that depends on x and t, with two extra "variance" channels ignored.
    eps = 0.5 * x + 0.001 * t.view(-1, 1, 1, 1)
    return torch.cat([eps, torch.zeros_like(eps)], dim=1)


@pytest.mark.parametrize("skip", [0, 3, 9])
def test_loops_yield_one_step_per_remaining_timestep(skip):
    d = GaussianDiffusion(10)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for loop in (d.ddim_loop(toy_model, x, skip_steps=skip, eta=0.8), d.plms_loop(toy_model, x, skip_steps=skip)):
        steps = list(loop)
        assert [s.index for s in steps] == list(range(9 - skip, -1, -1))
        assert all(s.sample.shape == x.shape and torch.isfinite(s.sample).all() for s in steps)


def test_skip_steps_out_of_range_is_refused():
    d = GaussianDiffusion(10)
    with pytest.raises(ValueError, match="skip_steps"):
        next(d.ddim_loop(toy_model, torch.zeros(1, 3, 8, 8), skip_steps=10))


def test_ddim_noise_comes_from_the_generator():
    d = GaussianDiffusion(10)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [s.sample for s in d.ddim_loop(toy_model, x, eta=0.8, generator=g)]

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[-1], c[-1])


def test_eta_zero_is_deterministic_whatever_the_noise():
    d = GaussianDiffusion(10)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = list(d.ddim_loop(toy_model, x, eta=0.0, generator=torch.Generator().manual_seed(1)))[-1].sample
    b = list(d.ddim_loop(toy_model, x, eta=0.0, generator=torch.Generator().manual_seed(2)))[-1].sample
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_guidance_moves_the_sample_along_the_gradient():
    d = GaussianDiffusion(10)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.ones_like(x)

    def toward_target(x, t, index):
        return 2.0 * (target - x)

    plain = list(d.ddim_loop(toy_model, x))[-1].sample
    guided = list(d.ddim_loop(toy_model, x, cond_fn=toward_target))[-1].sample
    assert (guided - target).abs().mean() < (plain - target).abs().mean()
    # pred_xstart is the model's own estimate, unchanged by guidance at the first step
    first_plain = next(d.ddim_loop(toy_model, x)).pred_xstart
    first_guided = next(d.ddim_loop(toy_model, x, cond_fn=toward_target)).pred_xstart
    torch.testing.assert_close(first_plain, first_guided)


def test_init_image_with_large_skip_stays_near_it():
    d = GaussianDiffusion(10)
    init = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    start = d.q_sample(init, 0, noise)
    assert (start - init).abs().max() < 0.05  # at index 0, abar = 0.9999
    first = next(d.ddim_loop(toy_model, noise, skip_steps=9, init_image=init)).sample
    assert first.shape == init.shape


def test_plms_order_is_validated():
    d = GaussianDiffusion(10)
    with pytest.raises(ValueError, match="order"):
        next(d.plms_loop(toy_model, torch.zeros(1, 3, 8, 8), order=5))
