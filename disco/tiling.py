"""GoBig's tiles: where the tiles of width_height lie on the enlarged canvas, and how many there are.

A canvas ``gobig_scale`` times the image's size is covered by tiles of the image's own size, so a
tile costs what the image cost (memory and time per step). Along each side the tiles are spread
evenly from one edge to the other, neighbours sharing at least ``gobig_overlap`` pixels (a 2x
enlargement of 512x512 with 64 shared pixels takes 3 x 3 tiles). No torch here: the plan and the
settings' cost check count tiles before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tile", "gobig_steps", "tile_grid", "tile_skip_steps", "tile_starts"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along a side of ``length`` pixels: the first at 0, the
    last at ``length - tile``, neighbours sharing at least ``overlap`` pixels (spread evenly, so the
    shared strips differ by a pixel at most). Raises ``ValueError`` unless ``0 <= overlap < tile <=
    length``."""
    if not 0 <= overlap < tile <= length:
        raise ValueError(f"tiles need 0 <= overlap < tile <= length, got {overlap}, {tile}, {length}")
    if tile == length:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))  # each tile after the first adds tile - overlap
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class Tile:
    """One tile of the enlarged canvas: its top-left corner (pixels) and size, and which of its
    sides border another tile (those are blended; a side on the canvas edge is not)."""

    x: int
    y: int
    width: int
    height: int
    left: bool
    right: bool
    top: bool
    bottom: bool


def tile_grid(width: int, height: int, scale: int, overlap: int) -> list[Tile]:
    """The tiles, row by row, that cover a canvas ``scale`` times ``width`` x ``height``, each tile
    ``width`` x ``height`` pixels (see ``tile_starts``). Raises ``ValueError`` for an overlap of half
    a side or more (the tiles would not advance)."""
    if 2 * overlap >= min(width, height):
        raise ValueError(f"overlap {overlap} must be less than half the smaller side of {width}x{height}")
    xs = tile_starts(width * scale, width, overlap)
    ys = tile_starts(height * scale, height, overlap)
    return [
        Tile(x, y, width, height, left=i > 0, right=i < len(xs) - 1, top=j > 0, bottom=j < len(ys) - 1)
        for j, y in enumerate(ys)
        for i, x in enumerate(xs)
    ]


def tile_skip_steps(steps: int, skip_ratio: float) -> int:
    """The steps each GoBig tile skips: ``int(steps * gobig_skip_ratio)`` (progrockdiffusion's rule),
    always fewer than ``steps`` for a ratio below 1."""
    return int(steps * skip_ratio)


def gobig_steps(width: int, height: int, steps: int, scale: int, skip_ratio: float, overlap: int) -> int:
    """Diffusion steps GoBig's tiles take in all: tiles x (steps - each tile's skipped steps)."""
    return len(tile_grid(width, height, scale, overlap)) * (steps - tile_skip_steps(steps, skip_ratio))
