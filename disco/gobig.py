"""GoBig (progrockdiffusion's): a finished image enlarged, then diffused again tile by tile.

1. The image is enlarged ``gobig_scale`` times with Lanczos resampling (Pillow), as
   progrockdiffusion enlarges it before slicing.
2. Each tile of the enlarged canvas (``disco.tiling``: tiles of ``width_height``, so memory and
   time per step are the image's own) is sampled again with the run's prompts, starting from its
   part of the enlarged picture: ``skip_steps = int(steps * gobig_skip_ratio)``, no perlin start,
   no symmetry, no init loss, and tile ``i`` seeded ``seed + 1 + i`` (progrockdiffusion moves the
   seed on by one per slice).
3. The tiles are blended back: each weighs 1 inside and rises linearly from 0 across
   ``gobig_overlap`` pixels on each side that borders another tile; the canvas is the weighted
   mean, so no tile's edge shows as a line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .prompts import Prompt
from .sampler import Models, StepReport, sample_image
from .settings import Settings
from .tiling import Tile, tile_grid, tile_skip_steps

__all__ = ["GoBigStep", "TileBlend", "enlarge", "gobig", "tile_settings", "tile_weight"]


@dataclass
class GoBigStep:
    """One step of a tile's sampling (``report``), and after the last tile's last step the blended
    enlarged image (``image``: (3, H * gobig_scale, W * gobig_scale) in [0, 1], on the CPU)."""

    tile: int  # which tile, from 0, row by row
    tiles: int
    report: StepReport
    image: torch.Tensor | None = None


def enlarge(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(3, H, W) in [0, 1] to (3, H * scale, W * scale) in [0, 1], Lanczos-resampled by Pillow from
    the 8-bit picture (what the image is as a file)."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    h, w = pixels.shape[:2]
    big = Image.fromarray(pixels).resize((w * scale, h * scale), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(big).copy()).permute(2, 0, 1).float().div(255)


def tile_weight(tile: Tile, overlap: int) -> torch.Tensor:
    """The tile's weight in the blend, (height, width): 1 inside, rising linearly as
    ``1 / (overlap + 1) ... overlap / (overlap + 1)`` across the ``overlap`` pixels at each side that
    borders another tile, so two neighbours' weights sum to 1 where their ramps meet."""
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)

    def along(length: int, start: bool, end: bool) -> torch.Tensor:
        weight = torch.ones(length)
        if overlap and start:
            weight[:overlap] = ramp
        if overlap and end:
            weight[-overlap:] = ramp.flip(0)
        return weight

    return along(tile.height, tile.top, tile.bottom)[:, None] * along(tile.width, tile.left, tile.right)[None, :]


class TileBlend:
    """The enlarged canvas being blended: tiles added one at a time (only the canvas and one tile
    are held), the weighted mean read at the end (``tile_weight``)."""

    def __init__(self, height: int, width: int) -> None:
        self.sum = torch.zeros(3, height, width)
        self.weights = torch.zeros(1, height, width)

    def add(self, tile: Tile, picture: torch.Tensor, overlap: int) -> None:
        """Add ``picture`` ((3, tile.height, tile.width) in [0, 1]) at ``tile``'s place."""
        box = (slice(None), slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width))
        weight = tile_weight(tile, overlap)
        self.sum[box] += picture * weight
        self.weights[box] += weight

    def image(self) -> torch.Tensor:
        """The blended canvas, (3, height, width) in [0, 1]. Raises ``ValueError`` where no tile was added."""
        if not bool((self.weights > 0).all()):
            raise ValueError("the tiles do not cover the canvas")
        return self.sum / self.weights


def tile_settings(settings: Settings) -> Settings:
    """The settings each tile is sampled with: ``skip_steps`` from ``gobig_skip_ratio``, and none of
    what belongs to a first image (perlin start, symmetry, init loss, intermediate saves)."""
    return dataclasses.replace(
        settings,
        skip_steps=tile_skip_steps(settings.steps, settings.gobig_skip_ratio),
        perlin_init=False,
        use_horizontal_symmetry=False,
        use_vertical_symmetry=False,
        init_scale=0,
        intermediate_saves=0,
        gobig=False,
        gobig_from_init=False,
    )


def gobig(
    settings: Settings,
    prompt_embeds: torch.Tensor | Mapping[str, torch.Tensor],
    prompt_weights: Sequence[float | Prompt],
    models: Models,
    seed: int,
    image: torch.Tensor,
) -> Iterator[GoBigStep]:
    """Enlarge ``image`` ((3, H, W) in [0, 1], H x W = ``settings.width_height``) and sample each
    tile again (``sample_image`` with the run's prompts); yields every step of every tile, the last
    carrying the blended enlarged image. Stopping the iteration stops the work at that step."""
    scale, overlap = settings.gobig_scale, settings.gobig_overlap
    big = enlarge(image, scale)
    tiles = tile_grid(settings.width, settings.height, scale, overlap)
    run = tile_settings(settings)
    blend = TileBlend(*big.shape[1:])
    for i, tile in enumerate(tiles):
        part = big[:, tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
        start = part.mul(2).sub(1).unsqueeze(0)  # in [-1, 1], as an init image
        for report in sample_image(run, prompt_embeds, prompt_weights, models, seed + 1 + i, init_image=start):
            done = None
            if report.cur_t == -1:  # the tile's last step: its picture joins the canvas
                blend.add(tile, report.image, overlap)
                done = blend.image() if i == len(tiles) - 1 else None
            yield GoBigStep(i, len(tiles), report, done)
