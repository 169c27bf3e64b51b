"""What a guidance step allocates, and how many cutouts go through CLIP in one pass.

The guidance sends its cutouts through CLIP in passes, each with one backward; a larger pass
is faster on a GPU, and CLIP's saved activations grow with it (about 100 MB per 224x224
cutout in fp32 for RN50; each of ``clip_models`` has its own figure). The pass size follows the
GPU's free memory so that the default image fits in 8 GB in fast mode and 12 GB in exact mode.
With several CLIP models, one model's passes end before the next one's begin, so each is sized
for the whole free memory (their weights are loaded, and so already taken out of it). The figures
below are measured by ``benchmarks/memory.py`` with ``LiveBytes`` (and checked against it in the
tests); the result of a step does not depend on the pass size. Nor does the pass size depend on
``cutn_batches``: a step with more cutout batches (a scheduled ``cutn_batches`` at its largest
included) makes more passes of the same size, which takes longer and no more memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .clip_catalog import DEFAULT_CLIP_MODEL

MAX_CUTOUTS_PER_PASS = 64  # more gains little even on large GPUs
MIB = 2**20
# Bytes per cutout in one CLIP pass (CLIP forward and backward, plus making the cutout),
# in fp32 (exact mode) and under half-precision autocast with CLIP's BatchNorms folded (fast).
# RN50: measured 96.5 + 12.3 MB and 25.8 + 12.3 MB at 1280x768; rounded up.
CUTOUT_BYTES = {"fp32": 112 * MIB, "half": 40 * MIB}
# Every offered CLIP model's, the same way (``python benchmarks/memory.py --cutout_bytes``: 16 cutouts
# of a 1280x768 image at the model's input size), rounded up to a multiple of 4 MiB; its FLOP per
# cutout (forward and backward) relative to RN50's in the comment.
CLIP_CUTOUT_BYTES: dict[str, dict[str, int]] = {
    DEFAULT_CLIP_MODEL: CUTOUT_BYTES,  # 24.4 GFLOP
    "RN101::openai": {"fp32": 148 * MIB, "half": 52 * MIB},  # 1.6x
    "RN50x4::openai": {"fp32": 284 * MIB, "half": 92 * MIB},  # 3.5x (288 px)
    "RN50x16::openai": {"fp32": 808 * MIB, "half": 244 * MIB},  # 12x (384 px)
    "RN50x64::openai": {"fp32": 1836 * MIB, "half": 536 * MIB},  # 43x (448 px)
    "ViT-B-32::openai": {"fp32": 60 * MIB, "half": 36 * MIB},  # 0.7x
    "ViT-B-16::openai": {"fp32": 136 * MIB, "half": 76 * MIB},  # 2.8x
    "ViT-L-14::openai": {"fp32": 436 * MIB, "half": 224 * MIB},  # 13x
    "ViT-L-14-336::openai": {"fp32": 884 * MIB, "half": 452 * MIB},  # 29x (336 px)
    "ViT-B-32::laion2b_s34b_b79k": {"fp32": 52 * MIB, "half": 32 * MIB},  # 0.7x (GELU keeps less than QuickGELU)
    "ViT-B-16::laion2b_s34b_b88k": {"fp32": 108 * MIB, "half": 60 * MIB},  # 2.8x
    "ViT-L-14::laion2b_s32b_b82k": {"fp32": 336 * MIB, "half": 172 * MIB},  # 13x
}
# The notebook's OpenCLIP models: a cutout goes through the image tower alone, so a model whose image tower
# is that of a model above has its figures (the ResNets' has no GELU at all; ``benchmarks/memory.py
# --cutout_bytes --clip_models ...`` measures them the same).
_SAME_IMAGE_TOWER = {
    "RN50::openai": ("RN50::yfcc15m", "RN50::cc12m", "RN50-quickgelu::yfcc15m", "RN50-quickgelu::cc12m"),
    "RN101::openai": ("RN101::yfcc15m", "RN101-quickgelu::yfcc15m"),
    "ViT-B-32::openai": ("ViT-B-32-quickgelu::laion400m_e31", "ViT-B-32-quickgelu::laion400m_e32"),
    "ViT-B-32::laion2b_s34b_b79k": ("ViT-B-32::laion2b_e16", "ViT-B-32::laion400m_e31", "ViT-B-32::laion400m_e32"),
    "ViT-B-16::laion2b_s34b_b88k": ("ViT-B-16::laion400m_e31", "ViT-B-16::laion400m_e32"),
}
CLIP_CUTOUT_BYTES.update({name: CLIP_CUTOUT_BYTES[like] for like, names in _SAME_IMAGE_TOWER.items() for name in names})
# Bytes per image pixel that the rest of the step holds (secondary model forward and backward,
# the blend and its gradient): measured 2.9 KB in fp32 and 1.5 KB in half precision.
PIXEL_BYTES = {"fp32": 3200, "half": 1700}
RESERVE = 512 * 2**20  # cuDNN workspaces and allocator rounding


def cutouts_per_pass(device: torch.device, half: bool, pixels: int, clip_model: str = DEFAULT_CLIP_MODEL) -> int:
    """Most cutouts per pass of CLIP model ``clip_model`` (a ``clip_models`` name) that fit the
    device's free memory now (at least 1), for an image of ``pixels`` pixels (width x height x batch)."""
    if device.type != "cuda":
        return MAX_CUTOUTS_PER_PASS
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by PyTorch
    return fitting_cutouts(free, half, pixels, clip_model)


def fitting_cutouts(free_bytes: int, half: bool, pixels: int, clip_model: str = DEFAULT_CLIP_MODEL) -> int:
    """Most cutouts per pass of ``clip_model`` in ``free_bytes`` besides the rest of the step (at least 1)."""
    precision = "half" if half else "fp32"
    budget = free_bytes - RESERVE - pixels * PIXEL_BYTES[precision]
    return max(1, min(MAX_CUTOUTS_PER_PASS, budget // CLIP_CUTOUT_BYTES[clip_model][precision]))


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storage created under it while they are alive, and the peak.

    Works on any device, also on fake tensors (shapes without values), which lets a step at
    any size be measured on a small machine."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._forget_freed()
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out

    def _forget_freed(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]

    @contextlib.contextmanager
    def part(self) -> Iterator[dict[str, int]]:
        """The peak above the level at entry of what runs inside (the dict is filled on exit)."""
        self._forget_freed()
        start, outer_peak = self.now, self.peak
        self.peak = self.now
        result: dict[str, int] = {}
        yield result
        result["peak"] = self.peak - start
        self.peak = max(outer_peak, self.peak)
