"""Image bytes in and out: the init image a client sends, the PNG frames we return."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image

from .settings import DEFAULT_LIMITS, SettingsError


def decode_init_image(data: bytes, width: int, height: int) -> torch.Tensor:
    """Image bytes to a (1, 3, height, width) tensor in [-1, 1]; bad input names ``init_image``."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise SettingsError("init_image", "no image bytes were given")
    limit = DEFAULT_LIMITS.max_pixels * 4  # an init image may be larger than the output, within reason
    Image.MAX_IMAGE_PIXELS = limit  # refuse decompression bombs before decoding them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("RGB").resize((width, height), Image.LANCZOS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SettingsError("init_image", f"the image has too many pixels: the limit is {limit}") from None
    except (OSError, ValueError) as exc:
        raise SettingsError("init_image", f"cannot read the image ({type(exc).__name__}: {exc})") from None
    array = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return array.unsqueeze(0).mul(2).sub(1)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] to (H, W, 3) uint8, the way frames travel."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
