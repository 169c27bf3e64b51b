"""Image bytes in and out: the init image a client sends, the PNG frames we return."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import SettingsError

# An init image is resized to the output, so any photo will do; only a picture whose header claims
# more pixels than this (about 11585 x 11585, beyond any camera's) is refused as a decompression bomb.
MAX_INIT_PIXELS = 2**27
# Transparent parts of an init image are shown over white, as most viewers and browsers show them.
TRANSPARENT_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def decode_init_image(data: bytes, width: int, height: int) -> torch.Tensor:
    """Image bytes to a (1, 3, height, width) tensor in [-1, 1], the picture as an image viewer shows it.

    Any format and mode Pillow reads is taken: the first frame of an animation, turned upright by its
    EXIF orientation, in 8-bit sRGB (CMYK, YCbCr and LAB converted; 16-bit grey scaled by 65535/255,
    32-bit integer and float grey stretched from their own minimum to maximum, a flat one mid-grey),
    transparency composited over ``TRANSPARENT_BACKGROUND``, then resized to ``width`` x ``height``
    (Lanczos, the aspect ratio not kept). Raises ``SettingsError("init_image", ...)`` for no bytes,
    bytes that are no readable image, or one of more than ``MAX_INIT_PIXELS`` pixels.
    """
    if not isinstance(data, bytes | bytearray) or not data:
        raise SettingsError("init_image", "no image bytes were given")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_INIT_PIXELS decides
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_INIT_PIXELS:
                    raise Image.DecompressionBombError(f"{w}x{h} is {w * h} pixels")
                img.seek(0)
                img = _as_viewed(img).resize((width, height), Image.LANCZOS)
    except Image.DecompressionBombError as exc:  # ours, or Pillow's own (beyond 2 x Image.MAX_IMAGE_PIXELS)
        raise SettingsError(
            "init_image", f"the image has too many pixels ({exc}); the limit is {MAX_INIT_PIXELS}"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise SettingsError("init_image", f"cannot read the image ({type(exc).__name__}: {exc})") from None
    array = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return array.unsqueeze(0).mul(2).sub(1)


def _as_viewed(img: Image.Image) -> Image.Image:
    """An opened image as an 8-bit RGB image, the way a viewer shows it (see ``decode_init_image``)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in (*_SIXTEEN_BIT, "I", "F"):
        img = _grey_to_8_bits(img)
    elif img.mode == "La":
        img = img.convert("LA")  # Pillow converts premultiplied grey only to straight grey
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        img = Image.new("RGB", img.size, TRANSPARENT_BACKGROUND)
        img.paste(rgba, mask=rgba)
    return img.convert("RGB")


def _grey_to_8_bits(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image as 8-bit grey (``L``)."""
    values = np.asarray(img, dtype=np.float32)
    if img.mode in _SIXTEEN_BIT:
        low, high = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        if high == low:
            return Image.new("L", img.size, 128)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    return Image.fromarray(np.rint((values - low) * (255 / (high - low))).astype(np.uint8))


def resized_frame(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (h, w, 3) uint8 picture at (height, width, 3), resized as ``decode_init_image`` resizes
    (Lanczos) when its size differs, taken as it is otherwise."""
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.LANCZOS)
    return np.asarray(img)


def array_to_init(array: np.ndarray, width: int, height: int) -> torch.Tensor:
    """An (h, w, 3) uint8 picture (an animation frame, a video frame) as an init image: a
    (1, 3, height, width) tensor in [-1, 1], resized as ``resized_frame`` resizes."""
    picture = resized_frame(array, width, height).astype(np.float32) / 255.0
    return torch.from_numpy(picture).permute(2, 0, 1).unsqueeze(0).mul(2).sub(1)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] to (H, W, 3) uint8, the way frames travel."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
