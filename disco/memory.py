"""What a guidance step allocates, and how many cutouts go through CLIP in one pass.

The guidance sends its cutouts through CLIP in passes, each with one backward; a larger pass
is faster on a GPU, and CLIP's saved activations grow with it (about 100 MB per 224x224
cutout in fp32). The pass size follows the GPU's free memory so that the default image fits
in 8 GB in fast mode and 12 GB in exact mode. The figures below are measured by
``benchmarks/memory.py`` with ``LiveBytes`` (and checked against it in the tests); the
result of a step does not depend on the pass size. Nor does the pass size depend on
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

MAX_CUTOUTS_PER_PASS = 64  # more gains little even on large GPUs
# Bytes per cutout in one CLIP pass (CLIP forward and backward, plus making the cutout),
# in fp32 (exact mode) and under half-precision autocast with CLIP's BatchNorms folded (fast).
# Measured 96.5 + 12.3 MB and 25.8 + 12.3 MB at 1280x768; rounded up.
CUTOUT_BYTES = {"fp32": 112 * 2**20, "half": 40 * 2**20}
# Bytes per image pixel that the rest of the step holds (secondary model forward and backward,
# the blend and its gradient): measured 2.9 KB in fp32 and 1.5 KB in half precision.
PIXEL_BYTES = {"fp32": 3200, "half": 1700}
RESERVE = 512 * 2**20  # cuDNN workspaces and allocator rounding


def cutouts_per_pass(device: torch.device, half: bool, pixels: int) -> int:
    """Most cutouts per CLIP pass that fit the device's free memory now (at least 1)."""
    if device.type != "cuda":
        return MAX_CUTOUTS_PER_PASS
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by PyTorch
    return fitting_cutouts(free, half, pixels)


def fitting_cutouts(free_bytes: int, half: bool, pixels: int) -> int:
    precision = "half" if half else "fp32"
    budget = free_bytes - RESERVE - pixels * PIXEL_BYTES[precision]
    return max(1, min(MAX_CUTOUTS_PER_PASS, budget // CUTOUT_BYTES[precision]))


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
