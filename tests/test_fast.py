"""Fast mode (Winograd convolutions on the CPU, autocast on a GPU) and the loop's device reads."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from disco import fast
from disco.clip_model import encode_texts
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.guidance import ClipGuide, Guidance
from disco.loading import ModelCache
from disco.sampler import Models, sample_image
from disco.settings import validate_settings
from disco_service import config

needs_nnpack = pytest.mark.skipif(not fast.winograd_available(), reason="this PyTorch build has no NNPACK")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in [0, 1]."""
    mse = (a - b).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def unet_pair(tiny_models):
    exact = tiny_models.unet
    winograd = copy.deepcopy(exact)
    return exact, winograd, fast.use_winograd(winograd)


def small_unet():
    """A seeded UNet of the tiny one's kind but for 64 px images (three downsamplings, 32 channels),
    run at 16 px: reduced precision takes PyTorch's slow convolutions on a CPU without bf16 units."""
    import json

    from conftest import REFERENCE

    from disco.unet import UNetConfig, build_unet

    config = json.loads((REFERENCE / "meta.json").read_text())["tiny_unet_config"]
    torch.manual_seed(0)
    small = {**config, "image_size": 64, "num_channels": 32, "attention_resolutions": "8"}
    return build_unet(UNetConfig.from_guided_diffusion(small)).eval().requires_grad_(False)


@needs_nnpack
def test_winograd_unet_is_close_to_exact_and_keeps_its_weights(tiny_models):
    exact, winograd, switched = unet_pair(tiny_models)
    assert switched > 0 and all(type(m) is not nn.Conv2d or m.kernel_size != (3, 3) for m in winograd.modules())
    assert winograd.state_dict().keys() == exact.state_dict().keys()
    x, t = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0])
    with torch.no_grad():
        want, got = exact(x, t), winograd(x, t)
    assert not torch.equal(want, got)  # the Winograd path was taken: its rounding differs
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * want.abs().max().item())
    fast.use_exact(winograd)
    with torch.no_grad():
        assert torch.equal(winograd(x, t), want)


@needs_nnpack
def test_winograd_is_skipped_for_small_maps_and_for_gradients(tiny_models):
    conv = nn.Conv2d(8, 8, 3, padding=1)
    reference = copy.deepcopy(conv)
    assert fast.use_winograd(conv) == 1
    small = torch.randn(1, 8, 32, 32)  # 1024 pixels, below WINOGRAD_MIN_PIXELS
    large = torch.randn(1, 8, 64, 64, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(conv(small), reference(small))
        assert not torch.equal(conv(large), reference(large))
    assert torch.equal(conv(large), reference(large))  # a backward will follow: the direct path


@needs_nnpack
def test_fast_mode_image_stays_close_to_exact(tiny_models):
    s = validate_settings(
        width_height=[64, 64], steps=10, skip_steps=2, display_rate=100, cut_overview="[1]*1000",
        cut_innercut="[1]*1000", cutn_batches=1,
    )  # fmt: skip
    embeds = encode_texts(tiny_models.clip, ["a lighthouse at dusk"])
    _, winograd, _ = unet_pair(tiny_models)
    fast_models = Models(unet=winograd, clip=tiny_models.clip, secondary=tiny_models.secondary)
    exact_image = list(sample_image(s, embeds, [1.0], tiny_models, seed=3))[-1].image
    fast_image = list(sample_image(s, embeds, [1.0], fast_models, seed=3))[-1].image
    assert not torch.equal(exact_image, fast_image)
    assert psnr(exact_image, fast_image) >= 40


def test_autocast_wrapper_runs_reduced_precision_and_returns_fp32():
    seen, unet = [], small_unet()
    unet.out[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([300.0])
    with torch.no_grad():
        want = unet(x, t)
        got = fast.Autocast(unet, torch.bfloat16)(x, t)
    assert seen == [torch.float32, torch.bfloat16] and got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_modes_are_checked(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"mode: 'turbo' is not a mode; allowed: fast, exact"):
        ModelCache(tmp_path, torch.device("cpu"), mode="turbo")
    monkeypatch.setenv("DISCO_MODE", "fp8")
    with pytest.raises(config.ConfigError, match="DISCO_MODE: 'fp8' is not one of the choices; allowed: fast or exact"):
        config.load()
    monkeypatch.setenv("DISCO_MODE", "Exact")
    assert config.load().mode == "exact"
    assert config.MODES == fast.MODES
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert fast.autocast_dtype(torch.device("cuda"), "fast") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a T4 or a V100
    assert fast.autocast_dtype(torch.device("cuda"), "fast") == torch.float16
    assert fast.autocast_dtype(torch.device("cuda"), "exact") is None
    assert fast.autocast_dtype(torch.device("cpu"), "fast") is None


class HostToDevice(TorchDispatchMode):
    """Records copies from host memory to the (meta) device: on a GPU such a copy waits for
    all queued work first. Used with ``torch.tensor``/``as_tensor`` patched, which create
    device tensors below the dispatcher."""

    def __init__(self, monkeypatch, device: torch.device):
        super().__init__()
        self.device, self.copies = device, []
        for name in ("tensor", "as_tensor"):
            original = getattr(torch, name)
            monkeypatch.setattr(torch, name, self._watch(name, original))

    def _watch(self, name, original):
        def create(*args, **kwargs):
            if torch.device(kwargs.get("device") or "cpu").type == self.device.type:
                self.copies.append(f"torch.{name}")
            return original(*args, **kwargs)

        return create

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            if any(t.device.type == "cpu" for t in tensors) and out.device.type == self.device.type:
                self.copies.append(str(func))
        return out


def test_guidance_step_never_waits_for_the_device(tiny_models, monkeypatch):
    # On the meta device tensors have shapes but no values, so reading one back to the host
    # (.item(), .tolist(), `if tensor:`) raises; copies from the host are recorded. On a GPU
    # either would make the host wait for the queued work every step.
    meta = torch.device("meta")
    s = validate_settings(
        width_height=[64, 64], cut_overview="[2]*1000", cut_innercut="[2]*1000", cutn_batches=2,
        clamp_grad=True, tv_scale=1, sat_scale=1, range_scale=150,
    )  # fmt: skip
    embeds = encode_texts(tiny_models.clip, ["a lighthouse at dusk"]).to(meta)
    diffusion = GaussianDiffusion(10)
    clip, secondary = copy.deepcopy(tiny_models.clip).to(meta), copy.deepcopy(tiny_models.secondary).to(meta)
    rng = CutoutRandomness(torch.Generator().manual_seed(0), None)  # sizes and offsets: host values
    guidance = Guidance(s, diffusion, [ClipGuide(clip, embeds, torch.ones(1, device=meta))], rng, secondary=secondary)
    x = torch.empty(1, 3, 64, 64, device=meta)
    t = torch.full((1,), diffusion.scaled_timestep(5), device=meta)
    guidance(x, t, 5)  # first call: per-size constants (resize weights, CLIP statistics) go to the device
    with HostToDevice(monkeypatch, meta) as traffic:
        grad = guidance(x, t, 5)
        diffusion.xstart_from_eps(x, 5, grad)
    assert grad.shape == x.shape and grad.device == meta
    assert len(guidance.losses) == 4 and all(loss.device == meta for loss in guidance.losses)
    assert traffic.copies == []


def test_batchnorms_folded_into_clip_convolutions(rn50_models):
    clip = copy.deepcopy(rn50_models.clip)
    g = torch.Generator().manual_seed(0)
    for m in clip.modules():  # give the norms statistics far from identity, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            for buffer, low, high in [(m.running_mean, -0.5, 0.5), (m.running_var, 0.3, 3), (m.weight, 0.5, 2)]:
                buffer.data.copy_(torch.empty_like(buffer).uniform_(low, high, generator=g))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in clip.visual.modules())
    x = torch.rand(2, 3, 224, 224, generator=g)

    def embed_and_grad(model):
        xi = x.clone().requires_grad_()
        e = model.encode_image(xi)
        return e, torch.autograd.grad(e.square().sum(), xi)[0]

    want, want_grad = embed_and_grad(clip)
    assert fast.prepare_clip(clip, "fast") is clip and norms > 50
    assert not any(isinstance(m, nn.BatchNorm2d) for m in clip.visual.modules())
    got, got_grad = embed_and_grad(clip)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
    assert (got_grad - want_grad).abs().mean() < 1e-3 * want_grad.abs().mean()
    assert fast.fold_batchnorms(clip) == 0  # nothing left to fold


def test_the_waiting_detectors_catch_what_the_guidance_used_to_do(monkeypatch):
    import torchvision.transforms.functional as TF
    from resize_right import resize as resize_right

    meta = torch.device("meta")
    image = torch.empty(1, 3, 64, 64, device=meta)
    with HostToDevice(monkeypatch, meta) as traffic:
        TF.affine(image, 5.0, [1, 2], 1.0, [0.0, 0.0])  # its matrix and grid scale
        torch.ones(3).to(meta)
    assert traffic.copies == ["torch.tensor", "torch.tensor", str(torch.ops.aten._to_copy.default)]
    with pytest.raises(RuntimeError, match="item"):
        resize_right(image, out_shape=(1, 3, 32, 32))  # reads its pad sizes back from the device


def test_half_weights_compute_as_autocast_does_and_take_half_the_memory():
    unet = small_unet()
    x, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([300.0])
    with torch.no_grad():
        want = fast.Autocast(unet, torch.bfloat16)(x, t)
        before = sum(p.numel() * p.element_size() for p in unet.parameters())
        layers = fast.half_weights(unet, torch.bfloat16)
        after = sum(p.numel() * p.element_size() for p in unet.parameters())
        got = fast.Autocast(unet, torch.bfloat16)(x, t)
    assert layers > 20 and after < 0.6 * before
    norms = [m for m in unet.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert torch.equal(got, want)
