"""Write weight files with the real layouts and real file names, filled by the fixture recipe.

    python tests/make_test_weights.py DIR [--models NAME ...]

Every model the product loads gets a file, so the whole product runs end to end here without
downloads (the pictures are noise: the weights are not trained). ``DIR/checksums.json``
records their sha256, which the weights module accepts in place of the published ones.

The CLIP models of ``clip_models`` get open_clip's random weights (seeded) in their file's layout:
OpenAI's TorchScript checkpoint (``RN101.pt``, ``ViT-B-32.pt``, ...: fp16 matrices and OpenAI's
``input_resolution``/``context_length``/``vocab_size`` entries, as in OpenAI's files), safetensors or
a plain state dict (LAION's). By default only RN50's is written; name the others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from recipe import recipe_state_dict

from disco.clip_catalog import CLIP_FILES, CLIP_SPECS, DEFAULT_CLIP_MODEL

HERE = Path(__file__).resolve().parent

REFERENCE = HERE / "fixtures" / "reference"
UNETS = {"512x512_diffusion_uncond_finetune_008100": 1245, "256x256_diffusion_uncond": 1256}
SECONDARY = "secondary_model_imagenet_2.pth"
CLIP = CLIP_FILES[DEFAULT_CLIP_MODEL]
VGG16 = "vgg16-397923af.pth"
ALL = [*(f"{n}.pt" for n in UNETS), SECONDARY, CLIP, VGG16]
CLIP_BY_FILE = {spec.file: spec for spec in CLIP_SPECS.values()}
KNOWN = [*ALL, *(f for f in CLIP_BY_FILE if f != CLIP)]
OPENAI_EXTRAS = {"input_resolution", "context_length", "vocab_size"}


def _state(name: str) -> dict[str, torch.Tensor]:
    if name.removesuffix(".pt") in UNETS:
        stem = name.removesuffix(".pt")
        return recipe_state_dict(REFERENCE / f"manifest_{stem}.json", UNETS[stem])
    if name == SECONDARY:
        return recipe_state_dict(REFERENCE / "manifest_secondary_model_imagenet_2.json", 1241)
    torch.manual_seed(0)
    if name in CLIP_BY_FILE:
        import open_clip

        return open_clip.create_model(CLIP_BY_FILE[name].architecture, pretrained=None).state_dict()
    if name == VGG16:
        import torchvision

        # torchvision's VGG16 feature layers (LPIPS reads only these; the classifier is left out).
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).state_dict()
        return {f"features.{k}": v for k, v in features.items()}
    raise ValueError(f"unknown model file {name!r}; known: {KNOWN}")


class _Holder(torch.nn.Module):
    """A module that only holds tensors: scripted, it makes a TorchScript archive of a state dict."""


def save_openai_checkpoint(state: dict[str, torch.Tensor], path: Path, input_size: int) -> None:
    """``state`` as OpenAI's CLIP checkpoints store it: a TorchScript archive whose state dict has the
    same names, matrices in fp16, and OpenAI's ``input_resolution``, ``context_length`` and ``vocab_size``."""
    extras = {
        "input_resolution": torch.tensor(input_size),
        "context_length": torch.tensor(state["positional_embedding"].shape[0]),
        "vocab_size": torch.tensor(state["token_embedding.weight"].shape[0]),
    }
    root = _Holder()
    for key, value in {**state, **extras}.items():
        *path_, leaf = key.split(".")
        module = root
        for part in path_:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        module.register_buffer(leaf, value.half() if value.is_floating_point() and value.dim() >= 2 else value)
    torch.jit.save(torch.jit.script(root), str(path))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def make(directory: Path, names: list[str]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    checksums_file = directory / "checksums.json"
    checksums = json.loads(checksums_file.read_text()) if checksums_file.exists() else {}
    for name in names:
        path = directory / name
        state = {k: v.contiguous() for k, v in _state(name).items()}
        if name in CLIP_BY_FILE and name.endswith(".pt"):  # OpenAI's layout
            save_openai_checkpoint(state, path, CLIP_BY_FILE[name].input_size)
        elif name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(path))
        else:
            torch.save(state, path)
        checksums[name] = sha256(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB)")
    checksums_file.write_text(json.dumps(checksums, indent=1))
    return checksums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--models", nargs="+", default=ALL, choices=KNOWN, help="which files (default: all but the optional CLIP ones)"
    )
    args = parser.parse_args(argv)
    make(args.directory, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
