"""Init images decoded as a viewer shows them: every mode Pillow reads, any photo size, bombs refused."""

import io
import struct
import time

import numpy as np
import pytest
from conftest import hand_made_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from disco.images import MAX_INIT_PIXELS, TRANSPARENT_BACKGROUND, decode_init_image
from disco.settings import SettingsError

WHITE = TRANSPARENT_BACKGROUND
assert WHITE == (255, 255, 255)  # the documented background


def encoded(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def sixteen_bit(mode: str, value: int) -> Image.Image:
    return Image.frombytes(mode, (8, 8), np.full((8, 8), value, "<u2" if mode == "I;16" else ">u2").tobytes())


def premultiplied_tiff(mode: str, colour: tuple) -> bytes:
    """A TIFF whose alpha is associated (premultiplied), which Pillow reads but does not write."""
    extra_samples = b"\x52\x01\x03\x00\x01\x00\x00\x00"  # tag 338, one SHORT: 2 unassociated, 1 associated
    data = encoded(Image.new(mode, (8, 8), colour), "TIFF")
    assert data.count(extra_samples + b"\x02\x00") == 1
    return data.replace(extra_samples + b"\x02\x00", extra_samples + b"\x01\x00")


def decoded(data: bytes, width: int = 8, height: int = 8) -> np.ndarray:
    """(height, width, 3) in 8-bit terms (0..255 floats) of what decode_init_image returns."""
    tensor = decode_init_image(data, width, height)
    assert tensor.shape == (1, 3, height, width) and tensor.min() >= -1 and tensor.max() <= 1
    return ((tensor[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.float64)


def transparent_palette() -> Image.Image:
    """2x1, palette: red opaque, then a transparent (hidden: black) index."""
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 0])
    img.putpixel((1, 0), 1)
    return img


UNIFORM = {
    "L": (lambda: encoded(Image.new("L", (8, 8), 77)), (77, 77, 77)),
    "1": (lambda: encoded(Image.new("1", (8, 8), 1)), WHITE),
    "RGB": (lambda: encoded(Image.new("RGB", (8, 8), (10, 20, 30))), (10, 20, 30)),
    "I;16 PNG mid-grey": (lambda: encoded(Image.fromarray(np.full((8, 8), 32768, np.uint16))), (128, 128, 128)),
    "I;16 PNG 257 is 1": (lambda: encoded(Image.fromarray(np.full((8, 8), 257, np.uint16))), (1, 1, 1)),
    "I;16 TIFF white": (lambda: encoded(sixteen_bit("I;16", 65535), "TIFF"), WHITE),
    "I;16B TIFF mid-grey": (lambda: encoded(sixteen_bit("I;16B", 32768), "TIFF"), (128, 128, 128)),
    "I flat": (lambda: encoded(Image.fromarray(np.full((8, 8), 7, np.int32)), "TIFF"), (128, 128, 128)),
    "F flat": (lambda: encoded(Image.fromarray(np.full((8, 8), 3.5, np.float32)), "TIFF"), (128, 128, 128)),
    "RGB 16-bit PNG": (lambda: hand_made_png(8, 8, 16, 2, struct.pack(">3H", 65535, 32768, 0)), (255, 128, 0)),
    "RGBA 16-bit PNG, transparent red": (lambda: hand_made_png(8, 8, 16, 6, struct.pack(">4H", 65535, 0, 0, 0)), WHITE),
    "LA 16-bit PNG, half-transparent grey": (
        lambda: hand_made_png(8, 8, 16, 4, struct.pack(">2H", 32768, 32768)),
        (191, 191, 191),  # 128 half over 255
    ),
    "RGBA transparent red": (lambda: encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0))), WHITE),
    "RGBA half-transparent red": (lambda: encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 128))), (255, 127, 127)),
    "LA transparent black": (lambda: encoded(Image.new("LA", (8, 8), (0, 0))), WHITE),
    "L with a transparent grey": (lambda: encoded(Image.new("L", (8, 8), 9), transparency=9), WHITE),
    "RGB with a transparent colour": (
        lambda: encoded(Image.new("RGB", (8, 8), (1, 2, 3)), transparency=(1, 2, 3)),
        WHITE,
    ),
    "CMYK TIFF": (lambda: encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF"), (255, 0, 0)),
    "CMYK JPEG": (lambda: encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100), (255, 0, 0)),
    "YCbCr TIFF": (lambda: encoded(Image.new("YCbCr", (8, 8), (76, 85, 255)), "TIFF"), (254, 0, 0)),
    "LAB TIFF red": (lambda: encoded(Image.new("LAB", (8, 8), (138, 209, 198)), "TIFF"), (251, 5, 4)),
    "premultiplied RGBa TIFF": (lambda: premultiplied_tiff("RGBA", (100, 0, 0, 128)), (227, 127, 127)),
    "premultiplied La TIFF": (lambda: premultiplied_tiff("LA", (100, 128)), (227, 227, 227)),
}


@pytest.mark.parametrize("make, rgb", UNIFORM.values(), ids=UNIFORM.keys())
def test_each_mode_gives_the_colour_a_viewer_shows(make, rgb):
    got = decoded(make())
    assert np.abs(got - rgb).max() <= 1.5, got[0, 0]


def test_pillow_reads_16_bit_colour_pngs_as_8_bits_already():
    assert Image.open(io.BytesIO(hand_made_png(2, 2, 16, 2, b"\x80\x00" * 3))).mode == "RGB"
    assert Image.open(io.BytesIO(hand_made_png(2, 2, 16, 6, b"\x80\x00" * 4))).mode == "RGBA"
    assert Image.open(io.BytesIO(hand_made_png(2, 2, 16, 4, b"\x80\x00" * 2))).mode == "RGBA"  # grey + alpha
    assert Image.open(io.BytesIO(hand_made_png(2, 2, 16, 0, b"\x80\x00"))).mode == "I;16"  # grey: decoded by us


def test_16_bit_mid_grey_is_the_middle_of_the_range():
    assert decode_init_image(encoded(Image.fromarray(np.full((4, 4), 32768, np.uint16))), 4, 4).abs().max() < 0.01


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.array([[-1000, 0, 1000, 3000]], np.int32), [0, 64, 128, 255]),  # stretched from min to max
        (np.array([[-0.5, 0.0, 0.5, np.nan]], np.float32), [0, 128, 255, 0]),  # NaN is the minimum
        (np.array([[0.0, 0.25, 1.0, np.inf]], np.float32), [0, 64, 255, 255]),  # infinity is the maximum
    ],
    ids=["I", "F with NaN", "F with infinity"],
)
def test_32_bit_and_float_grey_are_stretched_over_their_own_range(values, expected):
    got = decoded(encoded(Image.fromarray(values), "TIFF"), 4, 1)
    assert np.abs(got[0, :, 0] - expected).max() <= 1, got[0, :, 0]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_palette_transparent_index_shows_the_background_not_its_hidden_colour(fmt):
    got = decoded(encoded(transparent_palette(), fmt, transparency=1), 2, 1)
    assert np.abs(got[0] - [(255, 0, 0), WHITE]).max() <= 1, got


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_an_animation_gives_its_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert np.abs(decoded(data) - (255, 0, 0)).max() <= 1


def test_exif_orientation_turns_the_picture_upright():
    stored = Image.new("RGB", (2, 1), (255, 0, 0))
    stored.putpixel((1, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the left column on top
    got = decoded(encoded(stored, exif=exif), 1, 2)
    assert np.abs(got[:, 0] - [(255, 0, 0), (0, 0, 255)]).max() <= 1, got


def test_a_camera_size_photo_is_taken_whatever_the_output_cap(monkeypatch):
    monkeypatch.setenv("DISCO_MAX_PIXELS", str(64 * 64))  # the output cap: no say over init images
    photo = encoded(Image.new("RGB", (6000, 4000), (10, 200, 30)), "JPEG")
    assert np.abs(decoded(photo, 64, 64) - (10, 200, 30)).max() <= 3


@pytest.mark.parametrize("width, height", [(12000, 12000), (20000, 20000)], ids=["ours", "Pillow's"])
def test_a_decompression_bomb_is_refused_from_its_header(width, height):
    assert width * height > MAX_INIT_PIXELS
    start = time.monotonic()
    with pytest.raises(SettingsError) as refused:
        decode_init_image(hand_made_png(width, height, 8, 2), 64, 64)
    assert refused.value.parameter == "init_image" and "too many pixels" in str(refused.value)
    assert str(width * height) in str(refused.value) and str(MAX_INIT_PIXELS) in str(refused.value)
    assert time.monotonic() - start < 5  # nothing was decoded


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "no image bytes"),
        (b"not an image", "cannot read the image"),
        (encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:300], "cannot read the image"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_what_is_no_image_is_refused_by_name(data, fragment):
    with pytest.raises(SettingsError, match=f"^init_image: {fragment}"):
        decode_init_image(data, 8, 8)


SMALL = [
    encoded(Image.new(mode, (6, 5)), fmt)
    for mode, fmt in [("RGB", "PNG"), ("P", "GIF"), ("RGB", "JPEG"), ("I;16", "TIFF"), ("RGBA", "WEBP")]
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SMALL), st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_damaged_image_bytes_decode_or_are_refused_by_name(data, at, junk):
    damaged = data[:at] + junk + data[at + len(junk) :]
    try:
        tensor = decode_init_image(damaged, 4, 4)
    except SettingsError as exc:
        assert exc.parameter == "init_image"
        return
    assert tensor.shape == (1, 3, 4, 4) and tensor.isfinite().all()
