"""Guidance, cutouts, perlin and the sampler on small images with the test models."""

import pytest
import torch
import torch.nn.functional as F

from disco.clip_model import clip_normalize, encode_texts, input_size
from disco.cutouts import CutoutRandomness, make_cutouts
from disco.diffusion import GaussianDiffusion
from disco.guidance import ClipGuide, Guidance, range_loss, saturation_loss, spherical_dist_loss, tv_loss
from disco.perlin import perlin_init
from disco.sampler import Models, sample_image
from disco.settings import validate_settings

SMALL = dict(width_height=[64, 64], cut_overview="[1]*1000", cut_innercut="[1]*1000", cutn_batches=1)


def rng(seed=0):
    g = torch.Generator().manual_seed(seed)
    return CutoutRandomness(g, g)


def run(models, steps=4, skip=1, seed=1, init=None, **settings):
    s = validate_settings(**{**SMALL, "steps": steps, "skip_steps": skip, "display_rate": 1, **settings})
    embeds = encode_texts(models.clip, ["a red apple"])
    return list(sample_image(s, embeds, [1.0], models, seed=seed, init_image=init))


def clip_similarity(models, image, prompt="a red apple"):
    with torch.no_grad():
        img = torch.nn.functional.interpolate(image[None], size=input_size(models.clip), mode="bilinear")
        e = models.clip.encode_image(clip_normalize(img)).float()
    return torch.nn.functional.cosine_similarity(e, encode_texts(models.clip, [prompt]))[0].item()


# ----- cutouts -----


def test_cutout_count_size_and_range():
    image = torch.rand(1, 3, 64, 128)
    cuts = make_cutouts(image, overview=4, innercut=3, ic_pow=1.0, icgray_p=0.0, rng=rng(), cut_size=32)
    assert cuts.shape == (7, 3, 32, 32)
    plain = make_cutouts(
        image, overview=2, innercut=0, ic_pow=1.0, icgray_p=0.0, rng=rng(), cut_size=32, skip_augs=True
    )
    # the second overview is the grayscale of the first
    assert torch.allclose(plain[1, 0], plain[1, 1]) and not torch.allclose(plain[0, 0], plain[0, 1])


def test_cutouts_are_reproducible_from_the_generator():
    image = torch.rand(1, 3, 64, 64)
    a = make_cutouts(image, 2, 4, 1.0, 0.2, rng(5), cut_size=32)
    b = make_cutouts(image, 2, 4, 1.0, 0.2, rng(5), cut_size=32)
    c = make_cutouts(image, 2, 4, 1.0, 0.2, rng(6), cut_size=32)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("size", [(64, 64), (300, 300), (224, 224), (96, 160), (1280, 1280)])
def test_resize_matches_resize_right(size):
    from resize_right import resize as resize_right

    from disco.cutouts import resize

    image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    want = resize_right(image, out_shape=(2, 3, 224, 224))
    torch.testing.assert_close(resize(image, 224, 224), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("angle,shift", [(0.0, (0, 0)), (7.3, (3, -5)), (-9.9, (-11, 11))])
def test_rotate_shift_matches_torchvision_affine(angle, shift):
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    from disco.cutouts import rotate_shift

    image = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    want = TF.affine(image, angle, list(shift), 1.0, [0.0, 0.0], InterpolationMode.BILINEAR)
    # float32 rounding of the sampling grid differs with the CPU's vector width: up to 2.9e-5 seen
    torch.testing.assert_close(rotate_shift(image, angle, shift), want, rtol=0, atol=5e-5)


def test_cutouts_pass_gradients():
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    make_cutouts(image, 1, 2, 1.0, 0.0, rng(), cut_size=32).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


# ----- losses and the guidance gradient -----


def test_spherical_distance():
    a = torch.tensor([[1.0, 0.0]])
    assert spherical_dist_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert spherical_dist_loss(a, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2 * (torch.pi / 4) ** 2)


def guidance_for(models, diffusion, **settings):
    s = validate_settings(**{**SMALL, "clip_guidance_scale": 0, "range_scale": 0, "clamp_grad": False, **settings})
    embeds = encode_texts(models.clip, ["a red apple"])
    return Guidance(
        s,
        diffusion,
        [ClipGuide(models.clip, embeds, torch.ones(1))],
        rng(),
        secondary=models.secondary,
        unet=models.unet,
    )


@pytest.mark.parametrize(
    "scale,measure",
    [
        ("tv_scale", lambda est, x_in: tv_loss(x_in).sum()),
        ("range_scale", lambda est, x_in: range_loss(x_in).sum()),
        ("sat_scale", lambda est, x_in: saturation_loss(x_in)),
    ],
)
def test_each_loss_moves_its_measure_and_is_off_at_zero(tiny_models, scale, measure):
    diffusion = GaussianDiffusion(10)
    x = 3 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # well outside [-1, 1]
    t = torch.tensor([diffusion.scaled_timestep(5)])
    off = guidance_for(tiny_models, diffusion)
    assert torch.count_nonzero(off(x, t, 5)) == 0
    on = guidance_for(tiny_models, diffusion, **{scale: 1000})
    grad = on(x, t, 5)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        before = measure(*on._denoised(x, 5))
        after = measure(*on._denoised(x + 1e-2 * grad / grad.abs().max(), 5))
    assert after < before


def test_clip_gradient_raises_similarity(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    g = guidance_for(tiny_models, diffusion, clip_guidance_scale=1000, skip_augs=True)
    grad = g(x, t, 5)
    with torch.no_grad():
        before = clip_similarity(tiny_models, g._denoised(x, 5)[1][0].add(1).div(2))
        after = clip_similarity(tiny_models, g._denoised(x + 0.05 * grad / grad.abs().max(), 5)[1][0].add(1).div(2))
    assert after > before


def test_cutout_batches_through_clip_together_give_the_gradient_of_one_pass_each(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    settings = dict(clip_guidance_scale=1000, cutn_batches=3, cut_overview="[2]*1000", cut_innercut="[2]*1000")
    together = guidance_for(tiny_models, diffusion, **settings)
    grad_together = together(x, t, 5)
    apart = guidance_for(tiny_models, diffusion, **settings)
    apart.max_cutouts_per_pass = 1  # one cutout batch per CLIP pass, as Disco runs it
    grad_apart = apart(x, t, 5)
    assert grad_together.abs().sum() > 0
    torch.testing.assert_close(grad_together, grad_apart, rtol=1e-4, atol=1e-7)
    together_losses, apart_losses = [float(v) for v in together.losses], [float(v) for v in apart.losses]
    assert together_losses == pytest.approx(apart_losses, rel=1e-5) and len(together_losses) == 3


def test_gradient_rms_is_clamped(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = 3 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    grad = guidance_for(tiny_models, diffusion, range_scale=1e6, clamp_grad=True, clamp_max=0.05)(x, t, 5)
    assert grad.square().mean().sqrt().item() == pytest.approx(0.05, rel=1e-4)


def test_nan_gradient_becomes_zero(tiny_models):
    diffusion = GaussianDiffusion(10)
    g = guidance_for(tiny_models, diffusion, init_scale=1)
    g.init = torch.zeros(1, 3, 64, 64)
    g.init_loss = lambda a, b: (a * float("nan")).sum()
    grad = g(torch.randn(1, 3, 64, 64), torch.tensor([diffusion.scaled_timestep(5)]), 5)
    assert torch.count_nonzero(grad) == 0


def test_unet_estimate_is_used_without_secondary_model(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = 3 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    with_secondary = guidance_for(tiny_models, diffusion, range_scale=100)
    g = guidance_for(tiny_models, diffusion, range_scale=100)
    g.secondary = None
    a, b = with_secondary(x, t, 5), g(x, t, 5)
    assert b.abs().sum() > 0 and not torch.allclose(a, b)


def module_guidance_gradient(models, diffusion, settings, embeds, x, index, secondary, rng_seed=0):
    """The PaddleHub module's cond_fn, written out on its own: blend, losses on the blend, one gradient
    with respect to the blend carried back to x, NaN -> zeros, RMS clamp. Cutouts and CLIP are shared
    with the engine (same generator, one CLIP pass per cutout batch, as the module runs them)."""
    from disco.secondary import alpha_sigma_to_t

    s, g = settings, rng(rng_seed)
    at = 1000 - (int(diffusion.scaled_timestep(index)) + 1)
    overview = int(s.cut_overview.split("]")[0][1:])
    innercut = int(s.cut_innercut.split("]")[0][1:])
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        fac = float(diffusion.sqrt_one_minus_alphas_cumprod[index])
        if secondary:
            alpha = torch.tensor(diffusion.sqrt_alphas_cumprod[index], dtype=torch.float32)
            sigma = torch.tensor(diffusion.sqrt_one_minus_alphas_cumprod[index], dtype=torch.float32)
            out = models.secondary(x, alpha_sigma_to_t(alpha, sigma)[None].repeat(x.shape[0])).pred
        else:
            t = torch.full((x.shape[0],), diffusion.scaled_timestep(index))
            eps = models.unet(x, t)[:, :3]
            out = (
                float(diffusion.sqrt_recip_alphas_cumprod[index]) * x
                - float(diffusion.sqrt_recipm1_alphas_cumprod[index]) * eps
            )
        x_in = out * fac + x * (1 - fac)
        x_in_grad = torch.zeros_like(x_in)
        for _ in range(s.cutn_batches):
            cut_size = input_size(models.clip)  # the module's: its CLIP's input resolution (224 for RN50)
            cuts = make_cutouts(x_in.add(1).div(2), overview, innercut, 1.0, 0.2 if at < 400 else 0.0, g, cut_size)
            image_embeds = models.clip.encode_image(clip_normalize(cuts)).float()
            dists = spherical_dist_loss(image_embeds.unsqueeze(1), embeds.unsqueeze(0))
            losses = dists.view(overview + innercut, x.shape[0], -1).sum(2).mean(0)
            x_in_grad += torch.autograd.grad(losses.sum() * s.clip_guidance_scale, x_in)[0] / s.cutn_batches
        tv = F.pad(x_in, (0, 1, 0, 1), "replicate")
        tv = ((tv[..., :-1, 1:] - tv[..., :-1, :-1]) ** 2 + (tv[..., 1:, :-1] - tv[..., :-1, :-1]) ** 2).mean([1, 2, 3])
        rng_loss = (x_in - x_in.clamp(-1, 1)).pow(2).mean([1, 2, 3])
        sat = (x_in - x_in.clamp(-1, 1)).abs().mean()
        loss = tv.sum() * s.tv_scale + rng_loss.sum() * s.range_scale + sat * s.sat_scale
        x_in_grad += torch.autograd.grad(loss, x_in)[0]
        if torch.isnan(x_in_grad).any():
            return torch.zeros_like(x)
        grad = -torch.autograd.grad(x_in, x, x_in_grad)[0]
    magnitude = grad.square().mean().sqrt()
    return grad * magnitude.clamp(max=s.clamp_max) / magnitude


@pytest.mark.parametrize("secondary", [True, False])
@pytest.mark.parametrize("range_scale", [0, 150])
def test_guidance_gradient_is_the_modules(tiny_models, range_scale, secondary):
    diffusion = GaussianDiffusion(10)
    index = 7
    x = 1.5 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # partly outside [-1, 1]
    settings = dict(
        clip_guidance_scale=5000, range_scale=range_scale, tv_scale=20, sat_scale=10, clamp_grad=True,
        clamp_max=0.05, cutn_batches=2, cut_overview="[2]*1000", cut_innercut="[2]*1000", use_secondary_model=secondary,
    )  # fmt: skip
    ours = guidance_for(tiny_models, diffusion, **settings)
    if not secondary:
        ours.secondary = None
    got = ours(x, torch.tensor([diffusion.scaled_timestep(index)]), index)
    embeds = encode_texts(tiny_models.clip, ["a red apple"])
    want = module_guidance_gradient(tiny_models, diffusion, ours.settings, embeds, x, index, secondary)
    assert want.abs().sum() > 0
    error = ((got - want).norm() / want.norm()).item()
    assert error < 1e-5, f"relative error {error:.2e}"


def test_range_loss_acts_on_the_blend_at_the_modules_defaults(tiny_models):
    """range_scale=150 changes the gradient (it reaches x through the blend, as in the module)."""
    diffusion = GaussianDiffusion(10)
    x = 1.5 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([diffusion.scaled_timestep(7)])
    settings = dict(clip_guidance_scale=5000, clamp_grad=False)
    without = guidance_for(tiny_models, diffusion, range_scale=0, **settings)(x, t, 7)
    with_range = guidance_for(tiny_models, diffusion, range_scale=150, **settings)(x, t, 7)
    assert ((with_range - without).norm() / without.norm()).item() > 1e-3


def test_bf16_autocast_guidance_follows_the_fp32_gradient(rn50_models):
    tiny_models = rn50_models  # bfloat16's precision through RN50's own depth
    diffusion = GaussianDiffusion(10)
    # 32 px: the secondary model in fp16 is slow on a CPU; the cutouts are still CLIP's 64 px
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    settings = dict(clip_guidance_scale=5000, range_scale=150, clamp_grad=True)
    fp32 = guidance_for(tiny_models, diffusion, **settings)(x, t, 5)
    g = guidance_for(tiny_models, diffusion, **settings)
    g.autocast = torch.bfloat16
    bf16 = g(x, t, 5)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all() and g.fp32_retries == 0
    assert F.cosine_similarity(bf16.flatten(), fp32.flatten(), dim=0) > 0.99


class OverflowingInHalf(torch.nn.Module):
    """CLIP whose image features overflow fp16 (as a large guidance scale can), finite in fp32."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.visual = clip, clip.visual

    def encode_image(self, images):
        features = self.clip.encode_image(images)
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16:
            return (features.float() * 1e30).half()  # beyond fp16's 65504: inf
        return features


def test_fp16_overflow_is_retried_in_fp32_with_the_same_cutouts(tiny_models):
    diffusion = GaussianDiffusion(10)
    # 32 px: the secondary model in fp16 is slow on a CPU; the cutouts are still CLIP's 64 px
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    settings = dict(clip_guidance_scale=5000, clamp_grad=True, cutn_batches=2)
    want = guidance_for(tiny_models, diffusion, **settings)(x, t, 5)  # fp32 throughout

    g = guidance_for(tiny_models, diffusion, **settings)
    g.clips[0].model, g.autocast = OverflowingInHalf(tiny_models.clip), torch.float16
    got = g(x, t, 5)
    assert g.fp32_retries == 1 and len(g.losses) == 2  # the fp16 attempt's losses are dropped
    assert torch.equal(got, want)  # same cutouts (generators rewound), fp32: the fp32 gradient

    g.clips[0].model = tiny_models.clip  # no overflow: fp16 is kept, nothing retried
    fine = g(x, t, 5)
    assert g.fp32_retries == 1 and torch.isfinite(fine).all() and fine.abs().sum() > 0


def test_clip_pass_size_follows_free_gpu_memory(monkeypatch):
    from disco import memory

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    pixels, cuda = 1280 * 768, torch.device("cuda")
    sizes = {}
    for free in (1 * gib, 4 * gib, 6 * gib, 70 * gib):
        sizes[free // gib] = memory.cutouts_per_pass(cuda, True, pixels), memory.cutouts_per_pass(cuda, False, pixels)
    assert sizes[1] == (1, 1)  # never less than one cutout
    assert sizes[70] == (64, 64)
    assert sizes[4][0] > sizes[4][1] and sizes[4][0] <= sizes[6][0]  # half precision fits more
    assert memory.cutouts_per_pass(torch.device("cpu"), False, pixels) == memory.MAX_CUTOUTS_PER_PASS


# ----- perlin -----


def test_perlin_modes_shapes_ranges_and_colours():
    images = {m: perlin_init(96, 64, m, torch.Generator().manual_seed(0)) for m in ("mixed", "colored", "gray")}
    for image in images.values():
        assert image.shape == (1, 3, 64, 96)
        assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.1
    gray = images["gray"][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    colored = images["colored"][0]
    assert (colored[0] - colored[1]).abs().mean() > 0.05
    assert not torch.equal(images["mixed"], images["colored"])
    again = perlin_init(96, 64, "mixed", torch.Generator().manual_seed(0))
    assert torch.equal(again, images["mixed"])


# ----- the sampler -----


def test_frames_every_display_rate_and_the_last(tiny_models):
    s = validate_settings(**SMALL, steps=8, skip_steps=1, display_rate=3, clip_guidance_scale=0)
    reports = list(sample_image(s, encode_texts(tiny_models.clip, ["x"]), [1.0], tiny_models, seed=0))
    assert [r.step for r in reports] == list(range(1, 8))
    assert [r.step for r in reports if r.image is not None] == [1, 4, 7]
    assert reports[-1].cur_t == -1 and reports[-1].image.shape == (3, 64, 64)
    assert 0 <= reports[-1].image.min() and reports[-1].image.max() <= 1


def test_same_seed_same_frames_other_seed_different(tiny_models):
    a = run(tiny_models, seed=1)
    b = run(tiny_models, seed=1)
    c = run(tiny_models, seed=2)
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[-1].image, c[-1].image)


def test_guided_sampling_raises_clip_similarity(tiny_models):
    unguided = run(tiny_models, steps=6, skip=2, clip_guidance_scale=0, range_scale=0)[-1].image
    guided = run(tiny_models, steps=6, skip=2, clip_guidance_scale=20000, range_scale=0, clamp_max=0.5)[-1].image
    assert clip_similarity(tiny_models, guided) > clip_similarity(tiny_models, unguided)


def test_plms_mode_runs_and_differs_from_ddim(tiny_models):
    ddim = run(tiny_models, clip_guidance_scale=0)[-1].image
    plms = run(tiny_models, clip_guidance_scale=0, diffusion_sampling_mode="plms")[-1].image
    assert plms.shape == ddim.shape and not torch.allclose(plms, ddim)


def test_init_image_with_large_skip_stays_near_it(tiny_models):
    init = torch.linspace(-0.8, 0.8, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    near = run(tiny_models, steps=10, skip=8, clip_guidance_scale=0, init=init)[-1].image
    free = run(tiny_models, steps=10, skip=1, clip_guidance_scale=0, init=init)[-1].image
    target = init[0].add(1).div(2)
    assert (near - target).abs().mean() < 0.5 * (free - target).abs().mean()


def test_perlin_init_changes_the_start(tiny_models):
    plain = run(tiny_models, steps=10, skip=8, clip_guidance_scale=0)[-1].image
    perlin = run(tiny_models, steps=10, skip=8, clip_guidance_scale=0, perlin_init=True, perlin_mode="gray")[-1].image
    assert not torch.allclose(plain, perlin, atol=1e-2)


def test_fuzzy_prompt_makes_25_jittered_targets(tiny_models):
    from disco.sampler import _targets, as_prompts

    s = validate_settings(fuzzy_prompt=True, rand_mag=0.05)
    embeds, weights, by_step, _ = _targets(
        s, encode_texts(tiny_models.clip, ["a", "b"]), as_prompts([1.0, 1.0]), "RN50::openai", torch.Generator()
    )
    assert embeds.shape == (50, 1024) and weights.shape == (50,) and by_step is None
    assert weights.sum().item() == pytest.approx(1.0)


def test_models_default_to_cpu(tiny_models):
    assert isinstance(tiny_models, Models) and tiny_models.device.type == "cpu"


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "vgg16-397923af.pth"
    # torchvision's VGG16 layout; the classifier is left out to keep the file small (LPIPS reads features only)
    cfg = torchvision.models.vgg.cfgs["D"]  # VGG16
    features = torchvision.models.vgg.make_layers(cfg).state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


def test_init_loss_is_lpips_and_moves_towards_the_init(tiny_models, vgg16_file):
    from disco.lpips_loss import load_lpips

    lpips_model = load_lpips(vgg16_file)
    diffusion = GaussianDiffusion(10)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    init = torch.linspace(-0.8, 0.8, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    t = torch.tensor([diffusion.scaled_timestep(2)])
    g = guidance_for(tiny_models, diffusion, init_scale=0)
    g.init, g.init_loss = init, lpips_model
    assert torch.count_nonzero(g(x, t, 2)) == 0
    g = guidance_for(tiny_models, diffusion, init_scale=1000)  # the scales are read from the settings once
    g.init, g.init_loss = init, lpips_model
    grad = g(x, t, 2)
    with torch.no_grad():
        before = lpips_model(g._denoised(x, 2)[1], init).sum()
        after = lpips_model(g._denoised(x + 1e-2 * grad / grad.abs().max(), 2)[1], init).sum()
    assert after < before


def test_lpips_refuses_a_file_that_is_not_vgg16(tmp_path):
    from disco.lpips_loss import load_lpips

    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG16"):
        load_lpips(tmp_path / "bad.pth")


@pytest.mark.parametrize("steps", [1, 7, 100, 250, 300, 333, 999, 1000])
def test_schedule_step_read_on_the_host_matches_the_device_timestep(steps):
    import numpy as np

    d = GaussianDiffusion(steps)
    for index in range(steps):
        on_device = torch.full((1,), d.scaled_timestep(index))  # what the loop hands to cond_fn
        assert int(np.float32(d.scaled_timestep(index))) == int(on_device[0].item())
