"""How close fast mode's image is to exact mode's: the same seed, settings and weights, PSNR.

    python benchmarks/fast_psnr.py                       # 512x512, 20 steps (CPU: ~30 min on 2 cores)
    python benchmarks/fast_psnr.py --steps 250           # Disco's default schedule (use a GPU)

Weights: the recipe weights of the real 512x512 layout, the secondary model's recipe weights
and a randomly initialised CLIP RN50 (real checkpoints cannot be downloaded here), so the
picture itself means nothing; what is measured is how far fast mode's rounding carries a
guided run. Writes JSON and both final images to ``benchmarks/results/``; the last line is
``PSNR fast/exact: X dB``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from disco import fast
from disco.images import png_bytes, to_uint8_hwc
from disco.sampler import Models, sample_image
from disco.settings import validate_settings
from disco.unet import MODEL_CONFIGS, build_unet

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]  # the test weights' recipe, step_time's models
from recipe import recipe_state_dict  # noqa: E402
from step_time import UNET_MANIFEST, WEIGHT_SEED, device, shared_models  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in [0, 1], in dB."""
    mse = (a - b).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def final_image(settings, embeds, weights, models, seed: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    image = None
    for report in sample_image(settings, embeds, weights, models, seed=seed):
        image = report.image if report.image is not None else image
    return image, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x512", help="WxH")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip_steps", type=int, default=0)
    parser.add_argument("--cutn_batches", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    dev = device()
    settings = validate_settings(
        width_height=[width, height], steps=args.steps, skip_steps=args.skip_steps,
        cutn_batches=args.cutn_batches, display_rate=10**6,
    )  # fmt: skip
    state = recipe_state_dict(UNET_MANIFEST, WEIGHT_SEED)
    unet = build_unet(MODEL_CONFIGS["512x512_diffusion_uncond_finetune_008100"], state).to(dev)
    secondary, clip, embeds, prompt_weights = shared_models(Path("unused"), dev)
    weights = prompt_weights.tolist()

    exact = Models(unet=unet, clip=clip, secondary=secondary, device=dev)
    exact_image, exact_s = final_image(settings, embeds, weights, exact, args.seed)
    print(f"exact: {exact_s:.1f} s", flush=True)
    fast_models = Models(
        unet=fast.prepare_unet(unet, dev, "fast"),
        clip=fast.prepare_clip(copy.deepcopy(clip), "fast"),
        secondary=secondary,
        device=dev,
        autocast=fast.autocast_dtype(dev, "fast"),
    )
    fast_image, fast_s = final_image(settings, embeds, weights, fast_models, args.seed)
    print(f"fast:  {fast_s:.1f} s", flush=True)

    result = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "size": args.size,
        "steps": args.steps,
        "skip_steps": args.skip_steps,
        "cutn_batches": args.cutn_batches,
        "seed": args.seed,
        "exact_s": exact_s,
        "fast_s": fast_s,
        "psnr_db": psnr(fast_image, exact_image),
        "max_abs_diff": (fast_image - exact_image).abs().max().item(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"fast_psnr-{dev.type}-{args.size}-{args.steps}steps-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    for name, image in (("exact", exact_image), ("fast", fast_image)):
        Path(f"{stem}-{name}.png").write_bytes(png_bytes(to_uint8_hwc(image)))
    print(f"wrote {stem}.json and the two images")
    print(f"PSNR fast/exact: {result['psnr_db']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
