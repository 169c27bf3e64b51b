"""Peak memory of one guided sampling step, by part, at any size, without a GPU.

    python benchmarks/memory.py                       # 1280x768, the defaults, ~1 minute
    python benchmarks/memory.py --sizes 512x512 1280x768 --cutn_batches 4
    python benchmarks/memory.py --sides fast exact --clip_models RN50::openai ViT-B-32::openai ViT-B-16::openai
    python benchmarks/memory.py --cutout_bytes        # each offered CLIP model: bytes and FLOP per cutout
    python benchmarks/memory.py --cutout_bytes --clip_models RN50::yfcc15m   # only these

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

With several ``--clip_models`` every model's weights count, and each model's passes are sized for
the memory left (they run one model after the other); the guidance step's peak is the largest.
``--cutout_bytes`` measures, for every offered CLIP model, the bytes one cutout takes in a pass
(making it from a 1280x768 image and CLIP's forward and backward, 16 cutouts per pass, in fp32 and in
fast mode's fp16) and its FLOP (forward and backward): ``disco/memory.py``'s figures come from here.

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

import open_clip
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from disco import fast, guidance
from disco.clip_catalog import CLIP_MODELS, DEFAULT_CLIP_MODEL, clip_spec
from disco.clip_model import clip_normalize
from disco.cutouts import CutoutRandomness, make_cutouts
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


def empty_clip(name: str, mode: str) -> torch.nn.Module:
    """The CLIP model ``name`` of ``clip_models`` with uninitialised weights, prepared for ``mode``."""
    with torch.device("meta"):
        clip = open_clip.create_model(clip_spec(name).architecture, device="meta")
    clip = clip.to_empty(device="cpu").eval().requires_grad_(False).to(memory_format=torch.channels_last)
    return fast.prepare_clip(clip, mode)


def cutout_cost(name: str, half: bool, cutouts: int = 16) -> dict:
    """Bytes per cutout of one pass of ``cutouts`` cutouts (12 overviews and 4 inner cuts, Disco's first
    step) of a 1280x768 image, made and sent through CLIP forward and backward; FLOP per cutout."""
    spec = clip_spec(name)
    clip = empty_clip(name, "fast" if half else "exact")
    rng = CutoutRandomness(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    with FakeTensorMode(allow_non_fake_inputs=True):
        image = torch.empty(1, 3, 768, 1280, requires_grad=True)
    with LiveBytes() as counter, torch.enable_grad(), autocast(torch.float16 if half else None):
        cuts = make_cutouts(image, 12, cutouts - 12, 1.0, 0.2, rng, spec.input_size)
        normalised = clip_normalize(cuts, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)
        torch.autograd.grad(clip.encode_image(normalised).float().sum(), image)
    with FakeTensorMode(allow_non_fake_inputs=True):
        one = torch.empty(1, 3, spec.input_size, spec.input_size, requires_grad=True)
        with FlopCounterMode(display=False) as flops:
            clip.encode_image(one).float().sum().backward()
    return {"bytes_per_cutout": counter.peak // cutouts, "flop_per_cutout": flops.get_total_flops()}


def measure(side: str, width: int, height: int, cutn_batches: int, clip_models: list[str] | None = None) -> dict:
    clip_models = clip_models or [DEFAULT_CLIP_MODEL]
    s = validate_settings(
        width_height=[width, height], cutn_batches=cutn_batches, steps=250, skip_steps=10, clip_models=clip_models
    )
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
    clips = {name: empty_clip(name, "fast" if dtype else "exact") for name in clip_models}
    weights = {"unet": model_bytes(unet), "secondary": model_bytes(secondary)}
    weights.update({f"clip {name}": model_bytes(clip) for name, clip in clips.items()})

    guides = []
    for name, clip in clips.items():
        if side == "disco":
            max_cutouts = per_batch
        elif side == "fast_one_pass":
            max_cutouts = per_batch * cutn_batches
        else:  # what the engine picks on a GPU of that size with the weights loaded
            free = BUDGET[mode] - sum(weights.values())
            max_cutouts = fitting_cutouts(free, dtype is not None, width * height, name)
        embeds = torch.nn.functional.normalize(torch.randn(2, clip_spec(name).embed_dim), dim=-1)
        spec = clip_spec(name)
        guides.append(
            guidance.ClipGuide(clip, embeds, torch.tensor([0.7, 0.3]), name, spec.mean, spec.std, max_cutouts)
        )
    rng = CutoutRandomness(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    g = guidance.Guidance(s, diffusion, guides, rng, secondary=secondary, autocast=dtype)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1, 3, height, width)
        t = torch.full((1,), diffusion.scaled_timestep(index))
    counter = LiveBytes()
    per_clip = {}
    with counter:
        with counter.part() as unet_part, torch.no_grad():
            unet(x, t)
        with counter.part() as step_part:
            g._gradient(x, index, dtype)  # the step without the fp16 check, which reads a value
        with counter.part() as secondary_part, torch.enable_grad(), autocast(dtype):
            xg = x.detach().requires_grad_()
            torch.autograd.grad(secondary(xg, t).pred.float().sum(), xg)
        for guide in guides:
            per_pass = min(cutn_batches, max(1, guide.cutouts_per_pass // per_batch))
            with counter.part() as cut_part, torch.enable_grad(), autocast(dtype):
                xc = x.detach().requires_grad_()
                cuts = torch.cat([g._cutouts(xc, at, 12, 4, guide.size) for _ in range(per_pass)])
            with counter.part() as clip_part, torch.enable_grad(), autocast(dtype):
                cg = cuts.detach().requires_grad_()
                normalised = clip_normalize(cg, guide.mean, guide.std)
                torch.autograd.grad(guide.model.encode_image(normalised).float().sum(), cg)
            per_clip[guide.name] = {
                "cutout_batches_per_clip_pass": per_pass,
                "cutouts_one_pass": cut_part["peak"],
                "clip_forward_backward_one_pass": clip_part["peak"],
            }
            del cuts, cg, normalised
    parts = {
        "unet_forward": unet_part["peak"],
        "guidance_step": step_part["peak"],
        "secondary_forward_backward": secondary_part["peak"],
    }
    peak = sum(weights.values()) + max(parts["unet_forward"], parts["guidance_step"])
    return {
        "side": side,
        "size": f"{width}x{height}",
        "cutn_batches": cutn_batches,
        "clip_models": clip_models,
        "cutout_batches_per_clip_pass": per_clip[clip_models[0]]["cutout_batches_per_clip_pass"],
        "weights_bytes": weights,
        "activations_bytes": parts,
        "clip_passes": per_clip,
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
    parser.add_argument(
        "--clip_models",
        nargs="+",
        choices=CLIP_MODELS,
        help=f"the models of a run (default {DEFAULT_CLIP_MODEL}); with --cutout_bytes, those measured (default: all)",
    )
    parser.add_argument("--cutout_bytes", action="store_true", help="per cutout, for every offered CLIP model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    results = []
    if args.cutout_bytes:
        for name in args.clip_models or CLIP_MODELS:
            r = {"clip_model": name, "input_size": clip_spec(name).input_size}
            for precision, half in (("fp32", False), ("half", True)):
                cost = cutout_cost(name, half)
                r[f"bytes_per_cutout_{precision}"] = cost["bytes_per_cutout"]
            r["flop_per_cutout"] = cost["flop_per_cutout"]
            results.append(r)
            print(
                f"{name:>28} {r['input_size']} px: {r['bytes_per_cutout_fp32'] / 2**20:6.1f} MiB fp32, "
                f"{r['bytes_per_cutout_half'] / 2**20:6.1f} MiB half, {r['flop_per_cutout'] / 1e9:6.1f} GFLOP "
                "per cutout (forward and backward)",
                flush=True,
            )
    for size in [] if args.cutout_bytes else args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for side in args.sides:
            r = measure(side, width, height, args.cutn_batches, args.clip_models or [DEFAULT_CLIP_MODEL])
            results.append(r)
            gib = {k: f"{v / GB:.2f}" for k, v in r["activations_bytes"].items()}
            passes = ", ".join(
                f"{name}: cutouts {p['cutouts_one_pass'] / GB:.2f} + CLIP f+b "
                f"{p['clip_forward_backward_one_pass'] / GB:.2f} per pass of "
                f"{p['cutout_batches_per_clip_pass']} batch(es)"
                for name, p in r["clip_passes"].items()
            )
            print(
                f"{r['size']:>9} {side:>13} {' + '.join(r['clip_models'])}: peak {r['predicted_peak_gib']:5.2f} GiB = "
                f"weights {sum(r['weights_bytes'].values()) / GB:.2f} + max(unet forward {gib['unet_forward']}, "
                f"guidance {gib['guidance_step']}) | guidance parts: secondary f+b "
                f"{gib['secondary_forward_backward']}, {passes}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
