"""Perlin-noise start images (Disco Diffusion's ``perlin_init``), drawn from a generator.

Two multi-octave noise fields are made (12 octaves from a 1x1 grid, 8 octaves from 4x4),
resized to the image, auto-contrasted, averaged and mapped to [-1, 1]. ``mode`` picks their
colours: ``colored`` (both colour), ``gray`` (both gray) or ``mixed`` (colour + gray).
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    return 3 * t**2 - 2 * t**3


def perlin(width: int, height: int, scale: int, generator: torch.Generator) -> torch.Tensor:
    """One octave: gradient noise on a (width x height) grid, each cell ``scale`` pixels wide."""
    gx, gy = torch.randn(2, width + 1, height + 1, 1, 1, generator=generator)
    xs = torch.linspace(0, 1, scale + 1)[:-1, None]
    ys = torch.linspace(0, 1, scale + 1)[None, :-1]
    wx, wy = 1 - _smoothstep(xs), 1 - _smoothstep(ys)
    dots = wx * wy * (gx[:-1, :-1] * xs + gy[:-1, :-1] * ys)
    dots = dots + (1 - wx) * wy * (-gx[1:, :-1] * (1 - xs) + gy[1:, :-1] * ys)
    dots = dots + wx * (1 - wy) * (gx[:-1, 1:] * xs - gy[:-1, 1:] * (1 - ys))
    dots = dots + (1 - wx) * (1 - wy) * (-gx[1:, 1:] * (1 - xs) - gy[1:, 1:] * (1 - ys))
    return dots.permute(0, 2, 1, 3).contiguous().view(width * scale, height * scale)


def _octaves(amplitudes: list[float], grid: int, channels: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Sum of octaves on a ``side``-pixel square; octave k has a (grid * 2**k)-cell grid.

    Disco Diffusion draws every octave at ``grid * 2**len(amplitudes)`` pixels (4096 for 12
    octaves) and then shrinks the result to the image; drawing at the smallest power-of-two
    side that covers the image, and skipping octaves finer than a pixel, looks the same and
    costs a fraction.
    """
    side = min(side, grid * 2 ** len(amplitudes))
    planes = []
    for _ in range(channels):
        plane = torch.full((side, side), 0.5)
        for k, amplitude in enumerate(amplitudes):
            cells = grid * 2**k
            if cells > side:
                break
            plane = plane + perlin(cells, cells, side // cells, generator) * amplitude
        planes.append(plane)
    return torch.stack(planes)  # (channels, side, side)


def _noise_image(
    amplitudes: list[float], grid: int, gray: bool, size: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    side = 1 << (max(size) - 1).bit_length()  # smallest power of two covering the image
    planes = _octaves(amplitudes, grid, 1 if gray else 3, side, generator)
    planes = TF.resize(planes, list(size), antialias=True).clamp(0, 1)
    image: Image.Image = TF.to_pil_image(planes)
    image = ImageOps.autocontrast(image.convert("RGB"))
    return TF.to_tensor(image)


def perlin_init(width: int, height: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """A (1, 3, height, width) start image in [-1, 1]."""
    if mode not in ("mixed", "colored", "gray"):
        raise ValueError(f"perlin_mode: must be 'mixed', 'colored' or 'gray', got {mode!r}")
    coarse_gray = mode == "gray"
    fine_gray = mode != "colored"
    coarse = _noise_image([1.5**-i * 0.5 for i in range(12)], 1, coarse_gray, (height, width), generator)
    fine = _noise_image([1.5**-i * 0.5 for i in range(8)], 4, fine_gray, (height, width), generator)
    return ((coarse + fine) / 2).unsqueeze(0).mul(2).sub(1)
