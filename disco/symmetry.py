"""Disco Diffusion's symmetry: at chosen fractions of the run the sample is mirrored, so that the
rest of the run grows from a symmetric picture.

Horizontal symmetry copies the left half, flipped, onto the right half; vertical symmetry the top
half onto the bottom half; with both, the top-left quarter fills the image. This is the Disco
Diffusion notebook's (v5.3+) ``symmetry_transformation_fn``, which discoart keeps; when it is
applied is ``disco.diffusion.transformation_indices``.
"""

from __future__ import annotations

import torch


def mirror_halves(x: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    """``x`` (..., H, W) with its left half mirrored onto its right half (``horizontal``), then its
    top half onto its bottom half (``vertical``); a new tensor, ``x`` is left as it was.

    For an even width (every width here is a multiple of 64) this is exactly the notebook's
    ``cat(left, flip(left))``; for an odd one the middle column stays where it is.
    """
    if horizontal:
        w = x.shape[-1]
        x = torch.cat([x[..., : w - w // 2], x[..., : w // 2].flip(-1)], dim=-1)
    if vertical:
        h = x.shape[-2]
        x = torch.cat([x[..., : h - h // 2, :], x[..., : h // 2, :].flip(-2)], dim=-2)
    return x
