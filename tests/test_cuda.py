"""The CUDA path with the test weights: devices, dtypes, and agreement with the CPU.

Every test here is marked ``cuda`` and skipped where no GPU is present; ``benchmarks/gpu_check.sh``
runs them with ``pytest -m cuda``. On a GPU the sampler draws its noise from a CUDA generator,
so whole images cannot be compared with the CPU's; the comparisons use deterministic pieces
instead: model forwards, one guidance gradient (no augmentations: no pixel noise) and a short
DDIM loop with eta 0 from the same starting noise.
"""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference_check import FORWARD_RTOL, LOOP_RTOL

from disco import fast
from disco.clip_model import encode_texts
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.guidance import ClipGuide, Guidance
from disco.loading import ModelCache
from disco.sampler import Models, sample_image
from disco.settings import Settings, validate_settings

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
SMALL = dict(width_height=[64, 64], cut_overview="[2]*1000", cut_innercut="[2]*1000", cutn_batches=2)
PROMPT = "a red apple"
CHECK = Path(__file__).resolve().parent / "reference_check.py"
UNET_NAME = "512x512_diffusion_uncond_finetune_008100"


def prepared(models: Models, device: torch.device, mode: str) -> Models:
    """Copies of the test models, moved and prepared for ``mode`` the way ModelCache does it."""
    unet = copy.deepcopy(models.unet).to(device)
    clip = copy.deepcopy(models.clip).to(device)
    secondary = copy.deepcopy(models.secondary).to(device)
    return Models(
        unet=fast.prepare_unet(unet, device, mode),
        clip=fast.prepare_clip(clip, mode),
        secondary=secondary,
        device=device,
        autocast=fast.autocast_dtype(device, mode),
    )


def weight_dtypes(models: Models, model: torch.nn.Module) -> set[tuple[str, torch.dtype]]:
    """fp32 everywhere, except fast mode's UNet: convolution and linear weights in the autocast dtype."""
    if model is models.unet and models.autocast is not None:
        return {(CUDA.type, torch.float32), (CUDA.type, models.autocast)}
    return {(CUDA.type, torch.float32)}


def tolerance(expected: torch.Tensor, rtol: float) -> float:
    return rtol * (expected.std().item() + 1e-6)


def tf32_note() -> str:
    return f"TF32 convolutions {torch.backends.cudnn.allow_tf32}, matmuls {torch.backends.cuda.matmul.allow_tf32}"


def guidance_for(models: Models, settings: Settings, diffusion: GaussianDiffusion) -> Guidance:
    device = models.device
    return Guidance(
        settings,
        diffusion,
        [ClipGuide(models.clip, encode_texts(models.clip, [PROMPT]), torch.ones(1, device=device))],
        CutoutRandomness(torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)),
        secondary=models.secondary,
        unet=models.unet,
        autocast=models.autocast,
    )


def one_gradient(models: Models, x: torch.Tensor) -> torch.Tensor:
    """The guidance gradient at ``x`` (on the CPU) for the second step of a 10-step run."""
    s = validate_settings(**SMALL, steps=10, skip_steps=1, skip_augs=True)  # no augmentations: no pixel noise
    diffusion = GaussianDiffusion(s.steps)
    index = diffusion.num_timesteps - 2
    t = torch.full((1,), diffusion.scaled_timestep(index), device=models.device)
    return guidance_for(models, s, diffusion)(x.to(models.device), t, index).cpu()


@pytest.mark.parametrize("mode", fast.MODES)
def test_sample_image_on_cuda_gives_finite_fp32_frames_on_the_cpu(tiny_models, mode):
    models = prepared(tiny_models, CUDA, mode)
    s = validate_settings(**SMALL, steps=4, skip_steps=1, display_rate=1)
    embeds = encode_texts(models.clip, [PROMPT])
    assert embeds.device.type == CUDA.type and embeds.dtype == torch.float32
    reports = list(sample_image(s, embeds, [1.0], models, seed=0))
    assert [r.step for r in reports] == [1, 2, 3]
    for r in reports:
        assert r.image.shape == (3, 64, 64) and r.image.dtype == torch.float32 and r.image.device == CPU
        assert torch.isfinite(r.image).all() and r.image.min() >= 0 and r.image.max() <= 1
        assert r.loss is not None and math.isfinite(r.loss)
    for model in (models.unet, models.clip, models.secondary):
        assert {(p.device.type, p.dtype) for p in model.parameters()} == weight_dtypes(models, model)


def test_exact_forwards_on_cuda_match_the_cpu(tiny_models):
    models = prepared(tiny_models, CUDA, "exact")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 64, 64, generator=g), torch.tensor([500.0, 20.0])
    with torch.no_grad():
        want = tiny_models.unet(x, t)
        got = models.unet(x.to(CUDA), t.to(CUDA))
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=tolerance(want, FORWARD_RTOL), msg=tf32_note)
        cosine_t = torch.tensor([0.3, 0.9])
        want = tiny_models.secondary(x, cosine_t).pred
        got = models.secondary(x.to(CUDA), cosine_t.to(CUDA)).pred.cpu()
        torch.testing.assert_close(got, want, rtol=0, atol=tolerance(want, FORWARD_RTOL), msg=tf32_note)


def test_exact_guidance_gradient_on_cuda_matches_the_cpu(tiny_models):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    want = one_gradient(prepared(tiny_models, CPU, "exact"), x)
    got = one_gradient(prepared(tiny_models, CUDA, "exact"), x)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance(want, FORWARD_RTOL), msg=tf32_note)


def test_fast_guidance_gradient_on_cuda_is_finite_and_points_the_same_way(tiny_models):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    want = one_gradient(prepared(tiny_models, CPU, "exact"), x)
    got = one_gradient(prepared(tiny_models, CUDA, "fast"), x)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert got.abs().max() > 0, "the fast gradient is zero: a non-finite step was dropped"
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item()
    assert cosine >= 0.9, f"fast (fp16) and exact gradients differ in direction: cosine {cosine:.3f}"


def test_exact_ddim_loop_on_cuda_matches_the_cpu(tiny_models):
    s = validate_settings(**SMALL, steps=4, skip_steps=1, skip_augs=True)
    x_T = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    finals = []
    for device in (CPU, CUDA):
        models = prepared(tiny_models, device, "exact")
        diffusion = GaussianDiffusion(s.steps)
        guidance = guidance_for(models, s, diffusion)
        steps = list(diffusion.ddim_loop(models.unet, x_T.to(device), eta=0.0, skip_steps=1, cond_fn=guidance))
        finals.append(steps[-1].sample.cpu())
    want, got = finals
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance(want, LOOP_RTOL), msg=tf32_note)


@pytest.fixture(scope="module")
def cuda_model_dir(tmp_path_factory) -> Path:
    """The recipe weights under their real names: ``DISCO_TEST_MODEL_DIR`` when set, else made here."""
    if os.environ.get("DISCO_TEST_MODEL_DIR"):
        return Path(os.environ["DISCO_TEST_MODEL_DIR"])
    from make_test_weights import CLIP, SECONDARY, make

    directory = tmp_path_factory.mktemp("cuda_models")
    make(directory, [f"{UNET_NAME}.pt", SECONDARY, CLIP])
    return directory


@pytest.mark.parametrize("mode", fast.MODES)
def test_model_cache_loads_the_models_onto_the_gpu(cuda_model_dir, mode):
    cache = ModelCache(cuda_model_dir, CUDA, mode)
    models = cache.models(UNET_NAME, use_secondary_model=True, with_init_loss=False)
    assert models.device == CUDA
    assert models.autocast in ((torch.float16, torch.bfloat16) if mode == "fast" else (None,))
    for model in (models.unet, models.clip, models.secondary):
        assert {(p.device.type, p.dtype) for p in model.parameters()} == weight_dtypes(models, model)
    x = torch.randn(1, 3, 64, 64, device=CUDA)
    with torch.no_grad():
        out = models.unet(x, torch.tensor([500.0], device=CUDA))
        pred = models.secondary(x, torch.tensor([0.5], device=CUDA)).pred
    assert out.shape == (1, 6, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert pred.dtype == torch.float32 and torch.isfinite(pred).all()
    embeds = encode_texts(models.clip, [PROMPT])
    assert embeds.dtype == torch.float32 and torch.allclose(embeds.norm(dim=-1), torch.ones(1, device=CUDA))


def test_small_conformance_cases_pass_on_cuda(reference_dir):
    # the full set (with the 512x512 UNet forward) is run by benchmarks/gpu_check.sh
    only = "unet,sec,ddim_eta0.0,ddim_eta0.8,plms_eta0.0"
    cmd = [sys.executable, str(CHECK), str(reference_dir), "--device", "cuda", "--only", only]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 cases, 0 comparison(s) outside tolerance" in result.stdout
