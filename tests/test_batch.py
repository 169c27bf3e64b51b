"""batch_size above 1 (discoart's): several images painted together in one sampler call."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from disco.clip_model import encode_texts
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.errors import Limits
from disco.guidance import ClipGuide, Guidance
from disco.sampler import sample_image
from disco.settings import SettingsError, validate_settings
from disco.settings.fields import MAX_BATCH_SIZE

SMALL = dict(width_height=[64, 64], cut_overview="[1]*1000", cut_innercut="[1]*1000", cutn_batches=1)


def run(models, batch_size, seed=3, **settings):
    s = validate_settings(
        **{**SMALL, "steps": 3, "skip_steps": 1, "display_rate": 1, "batch_size": batch_size, **settings}
    )
    embeds = encode_texts(models.clip, ["a red apple"])
    return list(sample_image(s, embeds, [1.0], models, seed=seed))


def test_a_batch_of_two_reports_two_different_pictures(tiny_models):
    reports = run(tiny_models, 2)
    for r in reports:
        assert r.images.shape == (2, 3, 64, 64)
        assert torch.equal(r.image, r.images[0])  # `image` stays image 0 for the callers of one image
    last = reports[-1].images
    assert (last[0] - last[1]).abs().mean() > 0.01


def test_a_batch_of_one_is_the_single_image(tiny_models):
    for r in run(tiny_models, 1):
        assert r.images.shape == (1, 3, 64, 64) and torch.equal(r.image, r.images[0])


def test_unguided_image_0_of_a_batch_is_the_single_run(tiny_models):
    """Without guidance nothing couples the images: x_T's first rows are the single run's x_T (one
    generator, drawn in order) and DDIM with eta 0 is deterministic, so image 0 is the single image
    (up to the float rounding of the UNet's convolutions over a batch: a few 1e-6 of [0, 1])."""
    off = dict(clip_guidance_scale=0, range_scale=0, tv_scale=0, sat_scale=0, eta=0)
    single = run(tiny_models, 1, **off)[-1].image
    batch = run(tiny_models, 2, **off)[-1].images
    torch.testing.assert_close(batch[0], single, rtol=0, atol=5e-5)
    assert (batch[1] - batch[0]).abs().mean() > 0.01


def guidance(models, n, **settings):
    s = validate_settings(
        **{**SMALL, "batch_size": n, "skip_augs": True, "clamp_grad": False, "sat_scale": 0, "tv_scale": 3, **settings}
    )
    g = torch.Generator().manual_seed(5)
    embeds = encode_texts(models.clip, ["a red apple"])
    return Guidance(
        s, GaussianDiffusion(4), [ClipGuide(models.clip, embeds, torch.ones(1))], CutoutRandomness(g, g),
        secondary=models.secondary, unet=models.unet,
    )  # fmt: skip


def test_guidance_of_a_batch_is_each_images_own_with_the_shared_cutouts(tiny_models):
    """Each image's gradient is its own losses' (CLIP's over the batch's one set of cutout positions,
    TV, range); with the clamp and the saturation loss (taken over the whole batch, as the notebook
    does) off, a batch's gradients equal the images' gradients computed alone with the same cutouts."""
    x = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    t = torch.zeros(2)
    batch = guidance(tiny_models, 2)(x, t, 2)
    alone = torch.cat([guidance(tiny_models, 1)(x[i : i + 1], t[:1], 2) for i in range(2)])
    assert batch.abs().max() > 0
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-7)


def test_the_clamp_is_shared_by_the_batch(tiny_models):
    """clamp_grad: the notebook clamps the RMS of the whole batch's gradient, not each image's."""
    x = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    x[1] *= 3
    clamped = guidance(tiny_models, 2, clamp_grad=True, clamp_max=1e-6, clip_guidance_scale=5000)(x, torch.zeros(2), 2)
    assert clamped.square().mean().sqrt().item() == pytest.approx(1e-6, rel=1e-3)
    per_image = clamped.square().mean([1, 2, 3]).sqrt()
    assert not torch.allclose(per_image[0], per_image[1], rtol=0.05)


# ----- what is allowed -----


@pytest.mark.parametrize("n", [1, 2, MAX_BATCH_SIZE])
def test_batch_sizes_up_to_the_limit_are_accepted(n):
    assert validate_settings(batch_size=n, width_height=[64, 64]).batch_size == n


@pytest.mark.parametrize("n", [0, MAX_BATCH_SIZE + 1, 100])
def test_batch_sizes_outside_are_refused_naming_batch_size(n):
    with pytest.raises(SettingsError) as err:
        validate_settings(batch_size=n)
    assert err.value.parameter == "batch_size"


@settings(max_examples=20, deadline=None)
@given(st.integers(2, MAX_BATCH_SIZE), st.sampled_from(["2D", "3D", "Video Input"]))
def test_a_batch_is_refused_for_every_animation(n, mode):
    extra = {"video_init_path": "in.mp4"} if mode == "Video Input" else {}
    with pytest.raises(SettingsError) as err:
        validate_settings(batch_size=n, animation_mode=mode, width_height=[64, 64], max_frames=2, **extra)
    assert err.value.parameter == "batch_size" and "animation" in str(err.value)


def test_a_batch_is_refused_with_gobig():
    with pytest.raises(SettingsError) as err:
        validate_settings(batch_size=2, gobig=True, width_height=[256, 256])
    assert err.value.parameter == "batch_size" and "gobig" in str(err.value)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, MAX_BATCH_SIZE), st.sampled_from([64, 128]), st.integers(2, 500))
def test_the_caps_count_every_image_of_a_batch(n, side, steps):
    """A batch is accepted exactly when its pixels (width x height x batch_size) and pixel-steps fit."""
    cap_pixels, cap_steps = 3 * 128 * 128, 200 * 128 * 128
    limits = Limits(max_pixels=cap_pixels, max_pixel_steps=cap_steps)
    pixels = side * side * n
    fits = pixels <= cap_pixels and pixels * (steps - 1) <= cap_steps
    values = dict(batch_size=n, width_height=[side, side], steps=steps, skip_steps=1)
    if fits:
        validate_settings(values, limits=limits)
    else:
        with pytest.raises(SettingsError) as err:
            validate_settings(values, limits=limits)
        assert err.value.parameter == ("steps" if n == 1 else "batch_size")
