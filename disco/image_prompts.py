"""Image prompts (the notebook's ``image_prompts``): CLIP's embeddings of cutouts of an image, as targets.

As the Disco Diffusion notebook does for each ``"path:weight"`` of ``image_prompts``: the image is
scaled so that its shorter side is at most the output's shorter side, ``IMAGE_PROMPT_CUTS`` random
cutouts of it are embedded by a CLIP model, and each cutout's embedding becomes a target with
``weight / IMAGE_PROMPT_CUTS``, weighed beside the text prompts. The bytes come from the client:
nothing here opens a path.
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from PIL import Image

from .clip_catalog import clip_spec
from .clip_model import clip_normalize, input_size
from .cutouts import CutoutRandomness, make_cutouts
from .errors import SettingsError
from .images import decode_init_image

IMAGE_PROMPT_CUTS = 16  # the notebook's cutn for image prompts


def image_prompt_size(data: bytes, width: int, height: int) -> tuple[int, int]:
    """The size an image prompt is embedded at: its own, scaled (aspect kept) so that its shorter
    side is at most ``min(width, height)``, as the notebook's ``TF.resize(img, min(side_x, side_y,
    *img.size))``. Raises ``SettingsError`` naming ``image_prompts`` for bytes that are no image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise SettingsError("image_prompts", f"cannot read the image ({type(exc).__name__}: {exc})") from None
    short = min(width, height, w, h)
    scale = short / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


@torch.no_grad()
def encode_image_prompt(
    clip: torch.nn.Module, data: bytes, model: str, width: int, height: int, skip_augs: bool = False, seed: int = 0
) -> torch.Tensor:
    """Normalised embeddings ``(IMAGE_PROMPT_CUTS, d)`` of cutouts of the image ``data`` (any format
    Pillow reads) by ``clip``, the loaded CLIP model ``model``; ``width`` x ``height``: the output's
    size, which bounds the image's. The cutouts' randomness comes from ``seed`` alone, so the same
    image gives the same targets."""
    device = next(clip.parameters()).device
    w, h = image_prompt_size(data, width, height)
    image = decode_init_image(data, w, h, "image_prompts").to(device).add(1).div(2)  # (1, 3, h, w) in [0, 1]
    g = torch.Generator().manual_seed(seed)
    noise = g if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    spec = clip_spec(model)
    cuts = make_cutouts(image, 0, IMAGE_PROMPT_CUTS, 1.0, 0.0, CutoutRandomness(g, noise), input_size(clip), skip_augs)
    return F.normalize(clip.encode_image(clip_normalize(cuts, spec.mean, spec.std)).float(), dim=-1)
