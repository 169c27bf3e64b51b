"""Video in and out with PyAV (FFmpeg's libraries): a video init's frames, an animation as an MP4.

A video arrives as bytes (the client reads the file; the server never opens a path). Its frames
are extracted as the notebook's ``ffmpeg -vf select=not(mod(n,N))`` does: frames 0, N, 2N, ... of
the video (``extract_nth_frame``), decoded one at a time as they are needed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import SettingsError
from .images import MAX_INIT_PIXELS
from .packages import pyav

CRF = "17"  # the notebook's x264 quality (lower is better; 17 looks lossless to most eyes)


@dataclass(frozen=True)
class VideoInfo:
    """What an animation needs to know of its video before decoding it."""

    frames: int  # frames in the video
    rate: Fraction | None  # frames per second (None: the file does not say)
    width: int
    height: int

    def extracted(self, nth: int) -> int:
        """How many frames ``extract_nth_frame = nth`` takes: frames 0, nth, 2 nth, ..."""
        return -(-self.frames // nth)


def _open(data: bytes):
    av = pyav()
    if not isinstance(data, bytes | bytearray) or not data:
        raise SettingsError("video_init_path", "no video bytes were given")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise SettingsError("video_init_path", f"cannot read the video ({type(exc).__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise SettingsError("video_init_path", "the file has no video stream")
    return container


def video_info(data: bytes) -> VideoInfo:
    """The video's frame count, rate and size; raises ``SettingsError`` naming ``video_init_path``
    for bytes that are no video, a video without frames, or frames of more than ``MAX_INIT_PIXELS``."""
    av = pyav()
    container = _open(data)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_INIT_PIXELS:
            raise SettingsError(
                "video_init_path", f"its frames are {width}x{height}, more than {MAX_INIT_PIXELS} pixels"
            )
        count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate or stream.guessed_rate
    except av.FFmpegError as exc:
        raise SettingsError("video_init_path", f"cannot read the video ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    if not count:
        raise SettingsError("video_init_path", "the video has no frames")
    return VideoInfo(int(count), Fraction(rate) if rate else None, int(width), int(height))


def video_frames(data: bytes, nth: int, start: int = 0) -> Iterator[np.ndarray]:
    """The video's frames 0, ``nth``, 2 ``nth``, ... as (h, w, 3) uint8 RGB, from extracted frame
    ``start`` on, decoded one at a time."""
    av = pyav()
    container = _open(data)
    try:
        for i, frame in enumerate(container.decode(video=0)):
            if i % nth == 0 and i // nth >= start:
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise SettingsError("video_init_path", f"cannot decode the video ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()


def write_mp4(target: str | Path | BinaryIO, frames: Iterable[np.ndarray], fps: float | Fraction) -> int:
    """Frames ((H, W, 3) uint8 RGB, all one size with even sides) as an H.264 MP4 (yuv420p, CRF 17:
    the notebook's ffmpeg settings) at ``fps`` frames per second. A path is written under a
    temporary name and renamed when complete. Returns the number of frames written."""
    av = pyav()
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(target) if isinstance(target, str | Path) else None
    out = path.with_name(f".{path.name}.{os.getpid()}.tmp") if path else target
    count = 0
    with av.open(str(out) if path else out, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": CRF}
        for array in frames:
            if count == 0:
                stream.height, stream.width = array.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    if path:
        os.replace(out, path)
    return count
