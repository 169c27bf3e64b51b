"""``gif_fps`` and ``gif_size_ratio`` (discoart's): the GIF of each image's frames, as the client
writes it to output_dir and as the result store writes it for the Renderer and the job API."""

from __future__ import annotations

import base64
import io

import pytest
from docarray import Document, DocumentArray
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from disco.settings import GIF_MAX_FPS, SettingsError, default, validate_settings
from disco_service.outputs import gif_frame_ms, save_outputs, write_animations
from disco_service.server.results import ResultStore


def frame(colour, side=64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def frames(n=3, side=64) -> DocumentArray:
    docs = DocumentArray()
    for i in range(n):
        uri = "data:image/png;base64," + base64.b64encode(frame((40 * i, 0, 0), side)).decode()
        docs.append(Document(uri=uri, tags={"step": i + 1}))
    return docs


def gif_facts(path_or_bytes) -> tuple[tuple[int, int], int, list[int]]:
    """(size, frame count, each frame's duration in ms) of a GIF."""
    image = Image.open(path_or_bytes if not isinstance(path_or_bytes, bytes) else io.BytesIO(path_or_bytes))
    durations = []
    for index in range(image.n_frames):
        image.seek(index)
        durations.append(image.info["duration"])
    return image.size, image.n_frames, durations


def test_the_defaults_are_discoarts():
    assert (default("gif_fps"), default("gif_size_ratio")) == (20, 0.5)


@pytest.mark.parametrize(
    "settings,size,ms",
    [
        ({}, (32, 32), 50),
        ({"gif_fps": 10, "gif_size_ratio": 1}, (64, 64), 100),
        ({"gif_fps": 25, "gif_size_ratio": 0.25}, (16, 16), 40),
    ],
)
def test_the_gif_has_the_frame_rate_and_size_asked_for(tmp_path, settings, size, ms):
    gif, sprite = tmp_path / "a.gif", tmp_path / "a.png"
    write_animations(frames(3), gif, sprite, settings)
    assert gif_facts(gif) == (size, 3, [ms] * 3)
    assert Image.open(sprite).size[0] >= 64  # the sprite sheet keeps the frames' own size


def test_the_client_and_the_result_store_write_the_gif_of_the_settings(tmp_path):
    settings = validate_settings(
        width_height=[64, 64], gif_fps=10, gif_size_ratio=0.25, output_dir=str(tmp_path), seed=1
    )
    doc = Document(tags={"seed": 1.0, "batch_index": 0.0, "status": "done", "gif_fps": 10.0, "gif_size_ratio": 0.25})
    doc.chunks = frames(2)
    doc.uri = doc.chunks[-1].uri
    written = save_outputs(DocumentArray([doc]), settings)
    gif = next(p for p in written if p.suffix == ".gif")
    assert gif_facts(gif) == ((16, 16), 2, [100, 100])
    store = ResultStore(tmp_path / "results")
    for step, colour in ((1, (0, 0, 0)), (2, (90, 0, 0))):
        store.add_frame("d" * 32, step, frame(colour), {"seed": 1})
    store.finish("d" * 32, {"status": "done", "settings": {"gif_fps": 25, "gif_size_ratio": 0.5}})
    assert gif_facts(store.file("d" * 32, "frames.gif")) == ((32, 32), 2, [40, 40])


@given(st.floats(min_value=1, max_value=GIF_MAX_FPS))
def test_a_frame_lasts_1000_over_fps_ms_to_the_gifs_hundredth_of_a_second(fps):
    ms = gif_frame_ms({"gif_fps": fps})
    assert ms % 10 == 0 and ms >= 20 and abs(ms - 1000 / fps) <= 5


@pytest.mark.parametrize(
    "values,setting",
    [
        ({"gif_fps": 0}, "gif_fps"),
        ({"gif_fps": 60}, "gif_fps"),
        ({"gif_size_ratio": 0}, "gif_size_ratio"),
        ({"gif_size_ratio": 1.5}, "gif_size_ratio"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(values, setting):
    with pytest.raises(SettingsError) as refused:
        validate_settings(**values)
    assert refused.value.parameter == setting and str(refused.value).startswith(f"{setting}: must be in [")
