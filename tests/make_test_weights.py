"""Write weight files with the real layouts and real file names, filled by the fixture recipe.

    python tests/make_test_weights.py DIR [FILE ...]
    python tests/make_test_weights.py --manifests

The first form writes each named registry file (``pixel_art_diffusion_hard_256.pt``,
``secondary_model_imagenet_2.pth``, ...) that ``DIR`` does not hold yet; with no names, the files
a run with the default settings loads. Any model can then be tried offline (the pictures are
noise: the weights are not trained). ``DIR/checksums.json`` records their sha256, which the
weights module accepts in place of the published ones.

Each diffusion model's file has the layout in ``fixtures/reference/manifest_<model>.json``, where
``<model>`` is the first registry model of that layout (models of one layout share a manifest).
``--manifests`` writes the manifests of layouts that have none, from the published options
(``disco.unet.MODEL_CONFIGS``): the UNet is built on the meta device and its state dict's names,
shapes and dtypes recorded.

The depth models of the 3D mode (``dpt_large-midas-2f21e586.pt``, ``AdaBins_nyu.pt``) and RAFT
(``raft_large_C_T_SKHT_V2-ff5fadd5.pth``) get their architectures' random weights (seeded), AdaBins's
inside its training checkpoint (``{"model": {"module.<name>": ...}, "optimizer": ..., "epoch": ...}``).

The CLIP models of ``clip_models`` get open_clip's random weights (seeded) in their file's layout:
OpenAI's TorchScript checkpoint (``RN101.pt``, ``ViT-B-32.pt``, ...: fp16 matrices and OpenAI's
``input_resolution``/``context_length``/``vocab_size`` entries, as in OpenAI's files), safetensors or
a plain state dict (LAION's on Hugging Face, and those of open_clip's v0.2 release that the notebook's
OpenCLIP models load, ``rn50-quickgelu-yfcc15m-455df137.pt``, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zlib
from pathlib import Path

import torch
from recipe import recipe_state_dict

from disco.clip_catalog import CLIP_SPECS
from disco.models import DEFAULT_MODEL, DIFFUSION_MODELS
from disco.unet import MODEL_CONFIGS, UNetModel, known_layouts
from disco.weights import (
    ADABINS_FILE,
    CLIP_FILE,
    MIDAS_FILE,
    RAFT_FILE,
    REGISTRY,
    SECONDARY_FILE,
    VGG16_FILE,
    files_needed,
)

HERE = Path(__file__).resolve().parent

REFERENCE = HERE / "fixtures" / "reference"
# recipe seeds: the two ImageNet models keep theirs (reference_check.py, the CUDA checks); others by name
SEEDS = {"512x512_diffusion_uncond_finetune_008100": 1245, "256x256_diffusion_uncond": 1256}
SECONDARY = SECONDARY_FILE
CLIP = CLIP_FILE
VGG16 = VGG16_FILE
DEFAULT_RUN = files_needed(DEFAULT_MODEL, use_secondary_model=True, with_init_loss=False)
ALL = list(REGISTRY)
CLIP_BY_FILE = {spec.file: spec for spec in CLIP_SPECS.values()}


def layout_owner(model: str) -> str:
    """The first registry model with ``model``'s layout: its manifest serves them all."""
    layout = MODEL_CONFIGS[model].layout
    return next(name for name, config in known_layouts().items() if config.layout == layout)


def manifest_of(model: str) -> Path:
    return REFERENCE / f"manifest_{layout_owner(model)}.json"


def manifest_rows(model: str) -> list[list]:
    """``[key, shape, dtype]`` of every state-dict entry of ``model``'s UNet, built from its options."""
    with torch.device("meta"):
        unet = UNetModel(MODEL_CONFIGS[model])
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in unet.state_dict().items()]


def write_manifests(directory: Path = REFERENCE) -> list[Path]:
    """A manifest for each registry layout that has none yet; returns the files written."""
    written = []
    for owner in known_layouts():
        path = directory / f"manifest_{owner}.json"
        if not path.exists():
            path.write_text(json.dumps(manifest_rows(owner)))
            written.append(path)
    return written


def seed_of(model: str) -> int:
    return SEEDS.get(model, zlib.crc32(model.encode()) & 0xFFFF)


def _state(name: str) -> dict[str, torch.Tensor]:
    stem = name.removesuffix(".pt")
    if stem in DIFFUSION_MODELS:
        return recipe_state_dict(manifest_of(stem), seed_of(stem))
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
    if name in (MIDAS_FILE, ADABINS_FILE):
        from disco.depth import build_adabins, build_midas

        return (build_midas if name == MIDAS_FILE else build_adabins)("cpu").state_dict()
    if name == RAFT_FILE:
        from torchvision.models.optical_flow import raft_large

        return raft_large(weights=None).state_dict()
    raise ValueError(f"unknown model file {name!r}; known: {ALL}")


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


def adabins_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """``state`` as AdaBins's training saved it: the model under ``"model"`` with DataParallel's
    ``module.`` prefixes, the epoch, and AdamW's optimizer state (its per-parameter moments left
    out here: they triple the file and nothing reads them, but the kinds of values stay the same)."""
    group = {"lr": 3.57e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False}
    optimizer = {"state": {}, "param_groups": [{**group, "params": list(range(len(state)))}]}
    return {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": optimizer, "epoch": 24}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def make(directory: Path, names: list[str]) -> dict[str, str]:
    """Write each of ``names`` that ``directory`` does not hold; returns ``checksums.json``'s content."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"unknown model files {unknown}; known: {ALL}")
    directory.mkdir(parents=True, exist_ok=True)
    checksums_file = directory / "checksums.json"
    checksums = json.loads(checksums_file.read_text()) if checksums_file.exists() else {}
    for name in names:
        path = directory / name
        if path.exists():
            print(f"kept {path}")
            continue
        state = {k: v.contiguous() for k, v in _state(name).items()}
        if name in CLIP_BY_FILE and CLIP_BY_FILE[name].pretrained == "openai" and name.endswith(".pt"):  # OpenAI's
            save_openai_checkpoint(state, path, CLIP_BY_FILE[name].input_size)
        elif name == ADABINS_FILE:  # AdaBins's training checkpoint: DataParallel's names under "model"
            torch.save(adabins_checkpoint(state), path)
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
    parser.add_argument("directory", type=Path, nargs="?")
    parser.add_argument("files", nargs="*", metavar="FILE", help=f"registry files (default: {' '.join(DEFAULT_RUN)})")
    parser.add_argument("--models", nargs="+", default=[], metavar="FILE", help="the same as FILE ...")
    parser.add_argument("--manifests", action="store_true", help="write the manifests of layouts that have none")
    args = parser.parse_args(argv)
    if args.manifests:
        for path in write_manifests():
            print(f"wrote {path}")
        return 0
    if args.directory is None:
        parser.error("DIR is required")
    names = [*args.files, *args.models] or DEFAULT_RUN
    try:
        make(args.directory, names)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
