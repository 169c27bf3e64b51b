"""Run every case of a reference fixture directory against the engine.

    python tests/reference_check.py tests/fixtures/reference [--only unet,ddim_eta0.8] [--device cuda]

The directory format (see its README.md): ``meta.json`` (configs, seeds, loop cases),
``expected.npz`` (inputs and expected outputs) and ``manifest_*.json`` (checkpoint layouts).
Weights are filled by the recipe, so nothing is downloaded. Prints one line per case with
its max error and tolerance; exits 1 if any case is outside tolerance or cannot run.
``--device cuda`` runs the models and loops on the GPU as exact mode does (fp32 weights,
TF32 off, as the first line prints); inputs and outputs stay on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from recipe import recipe_state_dict

from disco.diffusion import GaussianDiffusion
from disco.secondary import build_secondary
from disco.unet import MODEL_CONFIGS, UNetConfig, build_unet

ROOT = Path(__file__).resolve().parent.parent

# Forward passes agree to 1e-3 * (std + 1e-6), whole loops to 2e-3 * std (fixture README).
FORWARD_RTOL = 1e-3
LOOP_RTOL = 2e-3


@dataclass
class Comparison:
    case: str
    array: str
    max_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_error)) and self.max_error <= self.tolerance


def compare(case: str, name: str, actual: np.ndarray, expected: np.ndarray, rtol: float, eps: float) -> Comparison:
    if actual.shape != expected.shape:
        return Comparison(case, f"{name} (shape {actual.shape} != {expected.shape})", float("inf"), 0.0)
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    return Comparison(case, name, err, rtol * (float(expected.std()) + eps))


class Fixtures:
    """A fixture directory, with models built lazily from the recipe and cached."""

    def __init__(self, directory: Path, device: torch.device | None = None):
        self.dir = directory
        self.device = device or torch.device("cpu")
        self.meta = json.loads((directory / "meta.json").read_text())
        self.arrays = np.load(directory / "expected.npz")
        self._models: dict[str, torch.nn.Module] = {}

    def tensor(self, name: str) -> torch.Tensor:
        """A fixture array as a tensor on the checked device."""
        return torch.from_numpy(np.array(self.arrays[name])).to(self.device)

    def _weights(self, manifest: str, seed_name: str) -> dict[str, torch.Tensor]:
        return recipe_state_dict(self.dir / manifest, int(self.meta["seeds"][seed_name]))

    def model(self, which: str) -> torch.nn.Module:
        if which not in self._models:
            self._models.clear()  # hold one model at a time: the full 512 UNet is 2.2 GB
            if which == "tiny":
                config = UNetConfig.from_guided_diffusion(self.meta["tiny_unet_config"])
                self._models[which] = build_unet(config, self._weights("manifest_tiny_unet.json", "tiny_weights"))
            elif which == "full512":
                name = "512x512_diffusion_uncond_finetune_008100"
                self._models[which] = build_unet(
                    MODEL_CONFIGS[name], self._weights(f"manifest_{name}.json", "full512_weights")
                )
            elif which == "secondary":
                self._models[which] = build_secondary(
                    self._weights("manifest_secondary_model_imagenet_2.json", "secondary_weights")
                )
            self._models[which].to(self.device)
        return self._models[which]


def unet_forward(fx: Fixtures, case: str, which: str) -> list[Comparison]:
    with torch.no_grad():
        out = fx.model(which)(fx.tensor(f"{case}_x"), fx.tensor(f"{case}_t")).cpu().numpy()
    return [compare(case, f"{case}_out", out, fx.arrays[f"{case}_out"], FORWARD_RTOL, 1e-6)]


def secondary_forward(fx: Fixtures, case: str) -> list[Comparison]:
    with torch.no_grad():
        out = fx.model("secondary")(fx.tensor("sec_x"), fx.tensor("sec_t"))
    return [
        compare(case, f"sec_{name}", getattr(out, name).cpu().numpy(), fx.arrays[f"sec_{name}"], FORWARD_RTOL, 1e-6)
        for name in ("v", "pred", "eps")
    ]


def sampling_loop(fx: Fixtures, case: str) -> list[Comparison]:
    spec = fx.meta["cases"][case]
    diffusion = GaussianDiffusion(int(spec["steps"]), int(spec["diffusion_steps"]), bool(spec["rescale_timesteps"]))
    results = [
        Comparison(case, "timestep_map", 0.0 if diffusion.timestep_map == spec["timestep_map"] else float("inf"), 0.0),
        compare(case, "alphas_cumprod", diffusion.alphas_cumprod, np.array(spec["alphas_cumprod"]), 1e-9, 1.0),
    ]

    def stand_in_grad(x: torch.Tensor, t_scaled: torch.Tensor, index: int) -> torch.Tensor:
        # The fixtures' deterministic guidance: grad(x, t_scaled) = -0.05 * x * t_scaled / 1000.
        return -0.05 * x * t_scaled.view(-1, 1, 1, 1) / 1000

    draws = iter(fx.tensor(f"{case}_noise"))
    common = dict(skip_steps=int(spec["skip_steps"]), cond_fn=stand_in_grad, clip_denoised=bool(spec["clip_denoised"]))
    model, x_T = fx.model("tiny"), fx.tensor(f"{case}_xT")
    if spec["mode"] == "ddim":
        loop = diffusion.ddim_loop(model, x_T, eta=float(spec["eta"]), noise_fn=lambda like: next(draws), **common)
    elif spec["mode"] == "plms":
        loop = diffusion.plms_loop(model, x_T, **common)
    else:
        raise ValueError(f"unknown mode {spec['mode']!r}")
    steps = list(loop)
    for name in ("samples", "pred_xstart"):
        actual = torch.stack([s.sample if name == "samples" else s.pred_xstart for s in steps]).cpu().numpy()
        results.append(compare(case, f"{case}_{name}", actual, fx.arrays[f"{case}_{name}"], LOOP_RTOL, 0.0))
    return results


def discover(fx: Fixtures) -> dict[str, Callable[[], list[Comparison]]]:
    """Every case the directory holds; arrays no case explains are an error, not a skip."""
    keys = set(fx.arrays.files)
    cases: dict[str, Callable[[], list[Comparison]]] = {}
    owned: set[str] = set()
    forward = {"unet": "tiny", "full512": "full512"}
    for case, which in forward.items():
        if f"{case}_out" in keys:
            cases[case] = lambda case=case, which=which: unet_forward(fx, case, which)
            owned |= {f"{case}_x", f"{case}_t", f"{case}_out"}
    if "sec_v" in keys:
        cases["sec"] = lambda: secondary_forward(fx, "sec")
        owned |= {f"sec_{n}" for n in ("x", "t", "v", "pred", "eps")}
    for case in fx.meta.get("cases", {}):
        cases[case] = lambda case=case: sampling_loop(fx, case)
        owned |= {f"{case}_{n}" for n in ("xT", "noise", "samples", "pred_xstart")}
    unexplained = sorted(keys - owned)
    if unexplained:
        raise SystemExit(f"expected.npz holds arrays no known case uses: {unexplained}")
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a fixture directory (meta.json, expected.npz, manifest_*.json)")
    parser.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    parser.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device: no CUDA GPU is available")
        # exact mode's numbers, as the engine runs them (fast.prepare_unet): fp32 without TF32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        print(f"device {torch.cuda.get_device_name(device)}; TF32 convolutions {tf32[0]}, matmuls {tf32[1]}")
    torch.manual_seed(0)
    fx = Fixtures(args.directory, device)
    cases = discover(fx)
    wanted = [c for c in args.only.split(",") if c] or list(cases)
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        parser.error(f"--only: unknown case(s) {unknown}; the directory has {list(cases)}")

    failed = 0
    # Cases sharing a model run together so each model is built once.
    order = sorted(wanted, key=lambda c: {"sec": 1, "full512": 2}.get(c, 0))
    for case in order:
        try:
            results = cases[case]()
        except Exception as exc:  # a case that cannot run is a failure, reported with its reason
            print(f"FAIL {case}: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        for r in results:
            status = "ok  " if r.ok else "FAIL"
            print(f"{status} {r.case:<14} {r.array:<26} max_error={r.max_error:.3e} tolerance={r.tolerance:.3e}")
            failed += not r.ok
    print(f"{len(order)} cases, {failed} comparison(s) outside tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
