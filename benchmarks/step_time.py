"""Seconds per guided sampling step: the reference implementation and this engine, side by side.

    pip install --no-deps -r benchmarks/requirements.txt     # the reference, guided-diffusion-sdk
    python benchmarks/step_time.py --quick                    # CPU, 256x256, cutn_batches=1 (~6 min)
    python benchmarks/step_time.py                            # GPU: several sizes, Disco's defaults

(a) reference: guided-diffusion-sdk's UNet (the fork Disco Diffusion uses) and its DDIM loop,
    driving a cond_fn written the way the Disco Diffusion notebook writes it: secondary model,
    cutouts, one CLIP pass per cutout batch, spherical-distance loss; fp32 on CPU, an fp16
    UNet on GPU as discoart runs it.
(b) this engine's ``sample_image`` with the same settings, in its default ``fast`` mode
    ("ours": NNPACK Winograd convolutions in the UNet on CPU, fp16 autocast on GPU) and in its
    ``exact`` fp32 mode ("ours_exact").

Both get the recipe weights of the real 512x512 layout, the same secondary model and the same
(randomly initialised) CLIP RN50; the cutouts are this project's implementation of Disco's
"Dango" cutouts on both sides, so what differs is the UNet, the loop and the guidance code.
Each side runs in its own process (its peak memory is its own); after ``--warmup`` steps the
sides take their measured steps in turn, so a slow spell of the machine hits all of them, and
the median of ``--measure`` steps is reported. Results go to ``benchmarks/results/`` (JSON and a
plot of step time against image size), and the last line is ``ratio ours/reference: X``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from disco.clip_model import load_clip
from disco.cutouts import CutoutRandomness, make_cutouts
from disco.guidance import range_loss, saturation_loss, spherical_dist_loss, tv_loss
from disco.secondary import alpha_sigma_to_t, build_secondary
from disco.settings import count_schedule, parse_schedule, validate_settings

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("reference", "ours", "ours_exact")
sys.path[:0] = [str(ROOT / "tests")]  # the test weights' recipe

FIXTURES = ROOT / "tests" / "fixtures" / "reference"
UNET_MANIFEST = FIXTURES / "manifest_512x512_diffusion_uncond_finetune_008100.json"
SECONDARY_MANIFEST = FIXTURES / "manifest_secondary_model_imagenet_2.json"
PROMPT_SEED, WEIGHT_SEED, SECONDARY_SEED = 7, 1245, 1241


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def shared_models(weights: Path, dev: torch.device):
    """The secondary model, CLIP and the prompt embeddings: identical on both sides."""
    from recipe import recipe_state_dict

    secondary = build_secondary(recipe_state_dict(SECONDARY_MANIFEST, SECONDARY_SEED)).to(dev).eval()
    torch.manual_seed(0)
    clip = load_clip(None).to(dev)
    g = torch.Generator().manual_seed(PROMPT_SEED)
    embeds = torch.nn.functional.normalize(torch.randn(2, 1024, generator=g), dim=-1).to(dev)
    return secondary.requires_grad_(False), clip, embeds, torch.tensor([0.7, 0.3], device=dev)


def reference_steps(settings, weights: Path, dev: torch.device):
    """Yield after each step of the reference loop."""
    from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

    s = settings
    config = model_and_diffusion_defaults()
    config.update(
        attention_resolutions="32, 16, 8",
        class_cond=False,
        diffusion_steps=(1000 // s.steps) * s.steps,
        rescale_timesteps=True,
        timestep_respacing=f"ddim{s.steps}",
        image_size=512,
        learn_sigma=True,
        noise_schedule="linear",
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
        resblock_updown=True,
        use_fp16=dev.type == "cuda",
        use_scale_shift_norm=True,
        use_checkpoint=True,
    )
    model, diffusion = create_model_and_diffusion(**config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True, mmap=True))
    model.requires_grad_(False).eval().to(dev)
    if config["use_fp16"]:
        model.convert_to_fp16()
    secondary, clip, embeds, prompt_weights = shared_models(weights, dev)
    clip = clip.to(memory_format=torch.contiguous_format)  # as the notebook loads it (ours runs NHWC)
    rng = CutoutRandomness(torch.Generator().manual_seed(0), torch.Generator(dev).manual_seed(0))
    overview, innercut = count_schedule("cut_overview", s.cut_overview), count_schedule("cut_innercut", s.cut_innercut)
    icgray = parse_schedule("cut_icgray_p", s.cut_icgray_p)
    cur_t = diffusion.num_timesteps - s.skip_steps - 1

    def cond_fn(x, t, y=None):  # the notebook's structure: secondary model, cutn batches, then the other losses
        n = x.shape[0]
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            alpha = torch.tensor(diffusion.sqrt_alphas_cumprod[cur_t], device=dev, dtype=torch.float32)
            sigma = torch.tensor(diffusion.sqrt_one_minus_alphas_cumprod[cur_t], device=dev, dtype=torch.float32)
            out = secondary(x, alpha_sigma_to_t(alpha, sigma)[None].repeat([n])).pred
            fac = diffusion.sqrt_one_minus_alphas_cumprod[cur_t]
            x_in = out * fac + x * (1 - fac)
            x_in_grad = torch.zeros_like(x_in)
            t_int = int(t.item()) + 1
            for _ in range(s.cutn_batches):
                cuts = make_cutouts(
                    x_in.add(1).div(2), overview[1000 - t_int], innercut[1000 - t_int], 1.0, icgray[1000 - t_int], rng
                )
                image_embeds = clip.encode_image(clip_normalize(cuts)).float()
                dists = spherical_dist_loss(image_embeds.unsqueeze(1), embeds.unsqueeze(0))
                dists = dists.view([overview[1000 - t_int] + innercut[1000 - t_int], n, -1])
                losses = dists.mul(prompt_weights).sum(2).mean(0)
                x_in_grad += torch.autograd.grad(losses.sum() * s.clip_guidance_scale, x_in)[0] / s.cutn_batches
            # as the PaddleHub module computes it: the range loss of the blend x_in
            loss = tv_loss(x_in).sum() * s.tv_scale + range_loss(x_in).sum() * s.range_scale
            loss = loss + saturation_loss(x_in).sum() * s.sat_scale
            x_in_grad += torch.autograd.grad(loss, x_in)[0]
            grad = -torch.autograd.grad(x_in, x, x_in_grad)[0]
        magnitude = grad.square().mean().sqrt()
        return grad * magnitude.clamp(max=s.clamp_max) / magnitude

    loop = diffusion.ddim_sample_loop_progressive(
        model,
        (1, 3, s.height, s.width),
        clip_denoised=False,
        model_kwargs={},
        cond_fn=cond_fn,
        progress=False,
        skip_timesteps=s.skip_steps,
        randomize_class=True,
        eta=s.eta,
    )
    for _ in loop:
        cur_t -= 1
        yield


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    from disco.clip_model import clip_normalize as normalize

    return normalize(images)


def our_steps(settings, weights: Path, dev: torch.device, mode: str):
    from disco.fast import autocast_dtype, prepare_clip, prepare_unet
    from disco.sampler import Models, sample_image
    from disco.unet import MODEL_CONFIGS, build_unet

    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    unet = build_unet(MODEL_CONFIGS["512x512_diffusion_uncond_finetune_008100"], state).to(dev)
    secondary, clip, embeds, prompt_weights = shared_models(weights, dev)
    unet = prepare_unet(unet, dev, mode)
    clip = prepare_clip(clip, mode)
    models = Models(unet=unet, clip=clip, secondary=secondary, device=dev, autocast=autocast_dtype(dev, mode))
    for _ in sample_image(settings, embeds, prompt_weights.tolist(), models, seed=0):
        yield


def open_steps(side: str, width: int, height: int, cutn_batches: int, weights: Path):
    dev = device()
    s = validate_settings(
        width_height=[width, height], steps=250, skip_steps=10, cutn_batches=cutn_batches, display_rate=1000
    )
    if side == "reference":
        return reference_steps(s, weights, dev)
    return our_steps(s, weights, dev, "exact" if side == "ours_exact" else "fast")


def timed_step(steps) -> float:
    cuda = device().type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    next(steps)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def write_weights(path: Path) -> None:
    from recipe import recipe_state_dict

    torch.save(recipe_state_dict(UNET_MANIFEST, WEIGHT_SEED), path)


def child(args: argparse.Namespace) -> int:
    """One side, in its own process: warm up, then one step per "step" line on stdin."""
    steps = open_steps(args.side, args.width, args.height, args.cutn_batches, args.weights)
    for _ in range(args.warmup):
        timed_step(steps)
    print("READY", flush=True)
    times = []
    for line in sys.stdin:
        if line.strip() != "step":
            break
        times.append(timed_step(steps))
        print(f"TIME {times[-1]}", flush=True)
    cuda = device().type == "cuda"
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"side": args.side, "width": args.width, "height": args.height, "median_s": statistics.median(times),
              "steps_s": times, "peak_gib": peak / 2**30,
              "peak_kind": "cuda max_memory_allocated" if cuda else "RSS"}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)
    return 0


class Side:
    """A child process running one side, driven a step at a time."""

    def __init__(self, side: str, size: tuple[int, int], args: argparse.Namespace, weights: Path, logs: Path):
        cmd = [sys.executable, __file__, "--child", side, "--weights", str(weights), "--width", str(size[0])]
        cmd += ["--height", str(size[1]), "--cutn_batches", str(args.cutn_batches), "--warmup", str(args.warmup)]
        self.name, self.log = side, logs / f"{side}-{size[0]}x{size[1]}.log"
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True
        )

    def expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
        self.proc.wait()
        raise SystemExit(f"{self.name} failed:\n{self.log.read_text()[-3000:]}")

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return float(self.expect("TIME "))

    def finish(self) -> dict:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        result = json.loads(self.expect("RESULT "))
        self.proc.wait()
        return result


def measure_interleaved(size: tuple[int, int], args: argparse.Namespace, weights: Path, logs: Path) -> list[dict]:
    """All sides' steps taken in turn (the order rotating each round), so a slow spell of the
    machine falls on every side alike; each side keeps its own process and peak memory. The
    processes start and warm up together (nothing is timed then), which saves minutes on a GPU."""
    sides = [Side(side, size, args, weights, logs) for side in SIDES]
    for side in sides:
        side.expect("READY")
    for round_ in range(args.measure):
        for k in range(len(sides)):
            sides[(round_ + k) % len(sides)].step()
    return [side.finish() for side in sides]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side in SIDES:
        rows = [r for r in results if r["side"] == side]
        ax.plot([r["width"] * r["height"] / 1e6 for r in rows], [r["median_s"] for r in rows], "o-", label=side)
    ax.set_xlabel("image size (megapixels)")
    ax.set_ylabel("seconds per guided step (median)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU-sized: 256x256, cutn_batches=1")
    parser.add_argument("--sizes", nargs="+", help="WxH sizes (default: quick 256x256; else up to 1280x768)")
    parser.add_argument("--cutn_batches", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--measure", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help="the 512x512 UNet's recipe weights (default: made here)")
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cutn_batches is None:
        args.cutn_batches = 1 if args.quick else 4
    if args.child:
        args.side = args.child
        return child(args)
    default_sizes = ["256x256"] if args.quick else ["256x256", "512x512", "1280x768"]
    sizes = [tuple(int(v) for v in text.split("x")) for text in args.sizes or default_sizes]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = Path(tmp) / "unet512_recipe.pt"
            write_weights(weights)
        for size in sizes:
            for r in measure_interleaved(size, args, weights, Path(tmp)):
                results.append(r)
                print(f"{r['side']:10s} {size[0]}x{size[1]}: {r['median_s']:.2f} s/step, peak {r['peak_gib']:.2f} GiB")

    def median(side: str, w: int, h: int) -> float:
        return next(r for r in results if r["side"] == side and (r["width"], r["height"]) == (w, h))["median_s"]

    ratios = {f"{w}x{h}": median("ours", w, h) / median("reference", w, h) for w, h in sizes}
    exact_ratios = {f"{w}x{h}": median("ours_exact", w, h) / median("reference", w, h) for w, h in sizes}
    dev = device()
    summary = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cutn_batches": args.cutn_batches,
        "results": results,
        "ratio_ours_over_reference": ratios,
        "ratio_ours_exact_over_reference": exact_ratios,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "quick" if args.quick else "full"
    (args.out / f"step_time-{kind}-{stamp}.json").write_text(json.dumps(summary, indent=1))
    plot(results, args.out / f"step_time-{kind}-{stamp}.png")
    print(f"wrote {args.out / f'step_time-{kind}-{stamp}.json'} and .png")
    largest = f"{sizes[-1][0]}x{sizes[-1][1]}"
    print(f"ratio ours_exact/reference: {exact_ratios[largest]:.3f}")
    print(f"ratio ours/reference: {ratios[largest]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
