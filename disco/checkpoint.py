"""Safe loading of weight files: tensors only, never pickled code."""

from __future__ import annotations

from pathlib import Path

import torch


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` with ``torch.load(weights_only=True)``, memory-mapped on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state_dict of tensors")
    return state
