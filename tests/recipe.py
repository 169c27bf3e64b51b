"""The fixture weight recipe: every tensor of a state_dict filled from its own key.

Reproducible anywhere (NumPy's legacy RandomState stream is frozen), so tests can make
weight files with the exact layout of the real checkpoints without downloading them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch


def recipe_tensor(key: str, shape: list[int], base_seed: int) -> torch.Tensor:
    seed = (zlib.crc32(key.encode("utf-8")) ^ base_seed) & 0xFFFFFFFF
    n = np.random.RandomState(seed).standard_normal(size=shape).astype(np.float32)
    if len(shape) >= 2:
        value = n / np.float32(np.sqrt(np.prod(shape[1:])))
    elif len(shape) == 1 and key.endswith(".weight"):
        value = 1 + np.float32(0.1) * n
    else:
        value = np.float32(0.1) * n
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def read_manifest(path: str | Path) -> list[tuple[str, list[int], str]]:
    return [(key, list(shape), dtype) for key, shape, dtype in json.loads(Path(path).read_text())]


def recipe_state_dict(manifest: str | Path, base_seed: int) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape, dtype in read_manifest(manifest):
        if dtype != "float32":
            raise ValueError(f"{manifest}: {key} has dtype {dtype}; the recipe makes float32 only")
        state[key] = recipe_tensor(key, shape, base_seed)
    return state
