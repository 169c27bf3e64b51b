"""One image as the Flow's sampler makes it, timed: the default image unless told otherwise.

    python tests/make_test_weights.py /tmp/models     # recipe weights under the real names
    python benchmarks/end_to_end.py /tmp/models       # 1280x768, 250 steps, skip 10, defaults otherwise

The work of one request: the prompts encoded by CLIP, the guided run, and every display frame
turned into a PNG (as the sampler executor does); the models are loaded first and timed apart,
as a server loads them once at start. Runs on the GPU when there is one. The last line is
``seconds: X`` (prompts to final image); ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from disco.clip_model import encode_texts
from disco.fast import MODES
from disco.images import png_bytes, to_uint8_hwc
from disco.loading import ModelCache, pick_device
from disco.prompts import build_prompts
from disco.sampler import sample_image
from disco.settings import Settings, uses_secondary_model, validate_settings

ROOT = Path(__file__).resolve().parent.parent


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    """Peak GPU memory allocated by this process, or its peak RSS on the CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def run_image(settings: Settings, cache: ModelCache, seed: int) -> dict:
    """Encode the prompts, sample, encode the display frames; seconds for each part."""
    device = cache.device
    start = time.perf_counter()
    prompts = build_prompts(settings.text_prompts, settings.style, settings.artist)
    embeds = encode_texts(cache.clip(), [p.text for p in prompts])
    synchronize(device)
    encoded = time.perf_counter()
    models = cache.models(settings.diffusion_model, uses_secondary_model(settings), with_init_loss=False)
    frames, finite, steps = 0, True, 0
    for report in sample_image(settings, embeds, [p.weight for p in prompts], models, seed=seed):
        steps = report.step
        if report.image is not None:
            finite = finite and bool(torch.isfinite(report.image).all())
            png_bytes(to_uint8_hwc(report.image))
            frames += 1
    synchronize(device)
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "encode_s": encoded - start,
        "sample_s": end - encoded,
        "steps": steps,
        "s_per_step": (end - encoded) / max(steps, 1),
        "frames": frames,
        "finite": finite,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="weights under their real names (tests/make_test_weights.py)")
    parser.add_argument("--mode", choices=MODES, default="fast")
    parser.add_argument("--size", default="1280x768", help="WxH")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--skip_steps", type=int, default=10)
    parser.add_argument("--cutn_batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    settings = validate_settings(
        width_height=[width, height], steps=args.steps, skip_steps=args.skip_steps, cutn_batches=args.cutn_batches
    )
    device = pick_device(torch.cuda.is_available())
    start = time.perf_counter()
    cache = ModelCache(args.model_dir, device, args.mode)
    cache.models(settings.diffusion_model, uses_secondary_model(settings), with_init_loss=False)
    synchronize(device)
    load_s = time.perf_counter() - start

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "mode": args.mode,
        "size": args.size,
        "steps": args.steps,
        "skip_steps": args.skip_steps,
        "cutn_batches": args.cutn_batches,
        "load_s": load_s,
        **run_image(settings, cache, args.seed),
        "peak_gib": peak_gib(device),
        "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "RSS",
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.mode} {args.size}, {result['steps']} steps on {result['device']}: models loaded in {load_s:.1f} s")
    print(f"encode {result['encode_s']:.2f} s, sampling {result['sample_s']:.1f} s ({result['s_per_step']:.3f} s/step)")
    print(f"peak {result['peak_gib']:.2f} GiB ({result['peak_kind']})")
    print(f"seconds: {result['seconds']:.1f}")
    return 0 if result["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
