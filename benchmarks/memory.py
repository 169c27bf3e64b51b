"""Peak memory of one guided sampling step, by part, at any size, without a GPU.

    python benchmarks/memory.py                       # 1280x768, the defaults, ~1 minute
    python benchmarks/memory.py --sizes 512x512 1280x768 --cutn_batches 4

The step runs on "fake" tensors (PyTorch's FakeTensorMode: shapes, dtypes and autograd, no
values, no arithmetic), and every tensor storage it creates is counted while it is alive, so
the figures are the bytes the step allocates on any device: what ``torch.cuda.max_memory_
allocated`` reports on a GPU, less cuDNN's workspaces and the caching allocator's rounding.
Weights are counted apart (they stay resident).

Sides, at the same settings (Disco's defaults: 4 cutout batches of 16 cutouts at the first
steps, the secondary model):
- ``fast``: this engine as it runs on a GPU in fast mode (fp16 autocast for the UNet, the
  secondary model and CLIP; CLIP's BatchNorms folded), CLIP passes sized for 8 GB.
- ``exact``: plain fp32, CLIP passes sized for 12 GB.
- ``disco``: the way discoart runs Disco Diffusion (the memory reference): fp16 UNet weights,
  fp32 CLIP and secondary model, one CLIP pass per cutout batch.
- ``fast_one_pass``: fast mode with every cutout batch in one CLIP pass (the old fixed size).

Autocast is CPU autocast here; on a GPU, CUDA autocast keeps a few more ops in fp32, so GPU
activations can be slightly larger. Results go to ``benchmarks/results/memory-*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from disco import fast, guidance
from disco.clip_model import load_clip
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.memory import LiveBytes, fitting_cutouts
from disco.secondary import SecondaryDiffusionImageNet2
from disco.settings import count_schedule, validate_settings
from disco.unet import MODEL_CONFIGS, UNetModel

ROOT = Path(__file__).resolve().parent.parent

GB = 1024**3
SIDES = ("fast", "exact", "disco", "fast_one_pass")
BUDGET = {"fast": 8 * GB, "exact": 12 * GB}  # the device memory each mode is sized for


def empty_model(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A model of the real layout with uninitialised CPU weights (no random init spent)."""
    with torch.device("meta"):
        model = build()
    return model.to_empty(device="cpu").eval().requires_grad_(False)


def model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def measure(side: str, width: int, height: int, cutn_batches: int) -> dict:
    s = validate_settings(width_height=[width, height], cutn_batches=cutn_batches, steps=250, skip_steps=10)
    diffusion = GaussianDiffusion(s.steps)
    index = diffusion.num_timesteps - s.skip_steps - 1  # the first step: the most cutouts (12 + 4)
    at = 1000 - (int(diffusion.scaled_timestep(index)) + 1)
    per_batch = count_schedule("cut_overview", s.cut_overview)[at] + count_schedule("cut_innercut", s.cut_innercut)[at]
    mode = "exact" if side == "exact" else "fast"
    dtype = torch.float16 if side in ("fast", "fast_one_pass") else None  # the guidance's precision

    unet = empty_model(lambda: UNetModel(MODEL_CONFIGS[s.diffusion_model]))
    if side != "exact":  # fp16 UNet weights: fast mode's half_weights, discoart's convert_to_fp16
        fast.half_weights(unet, torch.float16)
        unet = fast.Autocast(unet, torch.float16)
    secondary = empty_model(SecondaryDiffusionImageNet2)
    torch.manual_seed(0)
    clip = fast.prepare_clip(load_clip(None), "fast" if dtype else "exact")
    weights = {"unet": model_bytes(unet), "clip": model_bytes(clip), "secondary": model_bytes(secondary)}
    if side == "disco":
        max_cutouts = per_batch
    elif side == "fast_one_pass":
        max_cutouts = per_batch * cutn_batches
    else:  # what the engine picks on a GPU of that size with the weights loaded
        max_cutouts = fitting_cutouts(BUDGET[mode] - sum(weights.values()), dtype is not None, width * height)
    per_pass = min(cutn_batches, max(1, max_cutouts // per_batch))

    embeds = torch.nn.functional.normalize(torch.randn(2, 1024), dim=-1)
    rng = CutoutRandomness(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    g = guidance.Guidance(
        s, diffusion, clip, embeds, torch.tensor([0.7, 0.3]), rng, secondary=secondary, autocast=dtype,
        max_cutouts_per_pass=max_cutouts,
    )  # fmt: skip
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1, 3, height, width)
        t = torch.full((1,), diffusion.scaled_timestep(index))
    counter = LiveBytes()
    with counter:
        with counter.part() as unet_part, torch.no_grad():
            unet(x, t)
        with counter.part() as step_part:
            g._gradient(x, index, dtype)  # the step without the fp16 check, which reads a value
        with counter.part() as secondary_part, torch.enable_grad(), autocast(dtype):
            xg = x.detach().requires_grad_()
            torch.autograd.grad(secondary(xg, t).pred.float().sum(), xg)
        with counter.part() as cut_part, torch.enable_grad(), autocast(dtype):
            cuts = torch.cat([g._cutouts(x.detach().requires_grad_(), at, 12, 4) for _ in range(per_pass)])
        with counter.part() as clip_part, torch.enable_grad(), autocast(dtype):
            cg = cuts.detach().requires_grad_()
            torch.autograd.grad(clip.encode_image(guidance.clip_normalize(cg)).float().sum(), cg)
    parts = {
        "unet_forward": unet_part["peak"],
        "guidance_step": step_part["peak"],
        "secondary_forward_backward": secondary_part["peak"],
        "cutouts_one_pass": cut_part["peak"],
        "clip_forward_backward_one_pass": clip_part["peak"],
    }
    peak = sum(weights.values()) + max(parts["unet_forward"], parts["guidance_step"])
    return {
        "side": side,
        "size": f"{width}x{height}",
        "cutn_batches": cutn_batches,
        "cutout_batches_per_clip_pass": per_pass,
        "weights_bytes": weights,
        "activations_bytes": parts,
        "predicted_peak_bytes": peak,
        "predicted_peak_gib": round(peak / GB, 2),
    }


def autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1280x768"], help="WxH sizes")
    parser.add_argument("--cutn_batches", type=int, default=4)
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for side in args.sides:
            r = measure(side, width, height, args.cutn_batches)
            results.append(r)
            a = r["activations_bytes"]
            gib = {k: f"{v / GB:.2f}" for k, v in a.items()}
            print(
                f"{r['size']:>9} {side:>13}: peak {r['predicted_peak_gib']:5.2f} GiB = weights "
                f"{sum(r['weights_bytes'].values()) / GB:.2f} + max(unet forward {gib['unet_forward']}, "
                f"guidance {gib['guidance_step']}) | guidance parts: secondary f+b "
                f"{gib['secondary_forward_backward']}, cutouts {gib['cutouts_one_pass']}, CLIP f+b "
                f"{gib['clip_forward_backward_one_pass']} per pass of {r['cutout_batches_per_clip_pass']} batch(es)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
