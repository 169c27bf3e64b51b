"""Packages only animations need, imported when they are used: OpenCV (the 2D warp, optical flow) and PyAV
(reading a video, writing an MP4). Still images run without them."""

from __future__ import annotations

OPENCV = "opencv-python-headless"
PYAV = "av"


class MissingPackage(RuntimeError):
    """A package an animation needs is not installed; the message names it and how to install it."""


def opencv():
    """OpenCV's ``cv2``, or ``MissingPackage``."""
    try:
        import cv2
    except ImportError:
        raise MissingPackage(
            f"animation_mode '2D' and Video Input's optical flow need OpenCV: pip install {OPENCV} "
            "(it is in requirements.txt)"
        ) from None
    return cv2


def pyav():
    """PyAV's ``av``, or ``MissingPackage``."""
    try:
        import av
    except ImportError:
        raise MissingPackage(f"videos need PyAV: pip install {PYAV} (it is in requirements.txt)") from None
    return av
