"""Disco Diffusion's cutouts: what CLIP sees of the image at each step.

Per step, ``overview`` views of the whole image (padded to a square) and ``innercut`` random
crops whose size follows ``rand ** ic_pow`` between CLIP's input size and the short side, some
in grayscale, then augmentations shared by the whole batch (flip, small affine, grayscale,
colour jitter, pixel noise). Every random draw comes from the generators passed in, so a run
is reproducible and several runs can share a process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from resize_right import resize
from torchvision.transforms import InterpolationMode


@dataclass
class CutoutRandomness:
    params: torch.Generator  # CPU: sizes, offsets, coin flips
    noise: torch.Generator  # on the image's device: pixel noise


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


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
    cuts = TF.affine(
        cuts, angle=angle, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR
    )
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
    out_shape = (n, 3, cut_size, cut_size)
    cutouts: list[torch.Tensor] = []

    if overview > 0:
        pad_y, pad_x = (long_ - side_y) // 2, (long_ - side_x) // 2  # pad to a square, image centred
        whole = resize(F.pad(image, (pad_x, pad_x, pad_y, pad_y)), out_shape=out_shape)
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
        cutouts.append(resize(cut, out_shape=out_shape))

    cuts = torch.cat(cutouts)
    return cuts if skip_augs else augment(cuts, rng)
