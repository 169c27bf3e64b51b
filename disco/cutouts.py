"""Disco Diffusion's cutouts: what CLIP sees of the image at each step.

Per step, ``overview`` views of the whole image (padded to a square) and ``innercut`` random
crops whose size follows ``rand ** ic_pow`` between CLIP's input size and the short side, some
in grayscale, then augmentations shared by the whole batch (flip, small affine, grayscale,
colour jitter, pixel noise). Every random draw comes from the generators passed in, so a run
is reproducible and several runs can share a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from resize_right import resize as resize_right
from torchvision.transforms.functional import _get_inverse_affine_matrix


@dataclass
class CutoutRandomness:
    params: torch.Generator  # CPU: sizes, offsets, coin flips
    noise: torch.Generator  # on the image's device: pixel noise


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


@lru_cache(maxsize=1024)
def _resize_matrix(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """resize_right's weights along one axis (cubic, antialiased) as an (out, in) matrix.

    The resize is linear, so resizing the identity gives its weights. Computed once per size
    pair on the host and kept on the device: resize_right itself reads values back from the
    device on every call, which makes the host wait for the GPU.
    """
    identity = torch.eye(in_size, dtype=torch.float64)[None, None]
    weights = resize_right(identity, out_shape=(1, 1, in_size, out_size))[0, 0].T.float()
    if device.type == "cuda":
        return weights.pin_memory().to(device, non_blocking=True)
    return weights.to(device)


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Disco's resize (resize_right, cubic with antialiasing) of ``(..., H, W)`` images."""
    rows = _resize_matrix(image.shape[-2], height, image.device)
    cols = _resize_matrix(image.shape[-1], width, image.device)
    return rows @ image @ cols.T


def rotate_shift(image: torch.Tensor, angle: float, shift: tuple[int, int]) -> torch.Tensor:
    """torchvision's ``affine`` (rotation about the centre, then shift; bilinear; zeros outside)
    with its sampling grid built on the device from host numbers, so nothing is copied to the
    GPU and nothing waits (torchvision copies the matrix to the device, a blocking copy)."""
    h, w = image.shape[-2:]
    m = _get_inverse_affine_matrix([0.0, 0.0], angle, [float(v) for v in shift], 1.0, [0.0, 0.0])
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=image.device).view(1, w)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=image.device).view(h, 1)
    # output pixel (x, y) samples the input at the inverse map, in grid_sample's [-1, 1] units;
    # the coefficients rounded to float32 as torchvision rounds them
    r = [float(np.float32(np.float32(v) / np.float32(0.5 * (w if i < 3 else h)))) for i, v in enumerate(m)]
    grid_x = xs * r[0] + ys * r[1] + r[2]
    grid_y = xs * r[3] + ys * r[4] + r[5]
    grid = torch.stack([grid_x, grid_y], dim=-1).expand(image.shape[0], h, w, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=3)


def _noisy(x: torch.Tensor, rng: CutoutRandomness) -> torch.Tensor:
    return x + 0.01 * torch.randn(x.shape, generator=rng.noise, device=x.device, dtype=x.dtype)


def augment(cuts: torch.Tensor, rng: CutoutRandomness) -> torch.Tensor:
    """Disco's augmentations (no animation), one draw for the whole batch of cutouts."""
    g = rng.params
    if torch.rand((), generator=g).item() < 0.5:
        cuts = TF.hflip(cuts)
    cuts = _noisy(cuts, rng)
    size = cuts.shape[-1]
    angle = _uniform(g, -10, 10)
    max_shift = 0.05 * size
    shift = [round(_uniform(g, -max_shift, max_shift)), round(_uniform(g, -max_shift, max_shift))]
    cuts = rotate_shift(cuts, angle, shift)
    cuts = _noisy(cuts, rng)
    if torch.rand((), generator=g).item() < 0.1:
        cuts = _gray(cuts)
    cuts = _noisy(cuts, rng)
    jitters = [
        lambda x, f: TF.adjust_brightness(x, f),
        lambda x, f: TF.adjust_contrast(x, f),
        lambda x, f: TF.adjust_saturation(x, f),
        lambda x, f: TF.adjust_hue(x, f),
    ]
    for i in torch.randperm(4, generator=g).tolist():
        cuts = jitters[i](cuts, _uniform(g, -0.1, 0.1) if i == 3 else _uniform(g, 0.9, 1.1))
    return cuts


def make_cutouts(
    image: torch.Tensor,
    overview: int,
    innercut: int,
    ic_pow: float,
    icgray_p: float,
    rng: CutoutRandomness,
    cut_size: int = 224,
    skip_augs: bool = False,
) -> torch.Tensor:
    """Cutouts of ``image`` (n, 3, H, W) in [0, 1]: ``(overview + innercut) * n`` images of cut_size."""
    n, _, side_y, side_x = image.shape
    short, long_ = min(side_x, side_y), max(side_x, side_y)
    min_size = min(side_x, side_y, cut_size)
    cutouts: list[torch.Tensor] = []

    if overview > 0:
        pad_y, pad_x = (long_ - side_y) // 2, (long_ - side_x) // 2  # pad to a square, image centred
        whole = resize(F.pad(image, (pad_x, pad_x, pad_y, pad_y)), cut_size, cut_size)
        if overview <= 4:
            views = [whole, _gray(whole), TF.hflip(whole), _gray(TF.hflip(whole))]
            cutouts.extend(views[:overview])
        else:
            cutouts.extend([whole] * overview)

    for i in range(innercut):
        size = int(torch.rand((), generator=rng.params).item() ** ic_pow * (short - min_size) + min_size)
        ox = int(torch.randint(0, side_x - size + 1, (), generator=rng.params))
        oy = int(torch.randint(0, side_y - size + 1, (), generator=rng.params))
        cut = image[:, :, oy : oy + size, ox : ox + size]
        # As in Disco Diffusion: "<=" makes the first inner cut gray even when the probability is 0.
        if i <= int(icgray_p * innercut):
            cut = _gray(cut)
        cutouts.append(resize(cut, cut_size, cut_size))

    cuts = torch.cat(cutouts)
    return cuts if skip_augs else augment(cuts, rng)
