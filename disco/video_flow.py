"""Video Input with optical flow: where each frame starts and how the frames written are smoothed,
after the Disco Diffusion notebook (v5.4 to v5.7) "Define optical flow functions" and "Do the Run"
cells.

- **A frame's start** (``video_init_flow_warp``): frame ``n`` > 0 starts from frame ``n - 1`` as
  made, carried along the video's motion, blended with video frame ``n``:
  ``start = video_n * (1 - w) + warp(made_{n-1}, flow_{n -> n-1}) * w`` with ``w =
  video_init_flow_blend``. The flow is RAFT's from video frame ``n`` to video frame ``n - 1`` (the
  notebook's ``flow21 = get_flow(frame2, frame1)``), the warp OpenCV's ``remap`` reading the
  previous frame at ``p + flow(p)`` with black past the edges (``disco.optical_flow``). With
  ``video_init_check_consistency`` ``w`` is 0 wherever that flow fails the forward-backward check
  against the flow from ``n - 1`` to ``n``: occluded and uncovered pixels, and those whose flow
  leaves the frame, start from the video frame alone (the notebook left this step to be done).
- **The frames written** (``video_init_blend_mode``, the notebook's "Create video" cell, whose
  ``blend`` is 0.5): ``"None"`` writes frame ``n`` as made; ``"linear"`` writes
  ``made_{n-1} * 0.5 + made_n * 0.5``; ``"optical flow"`` writes ``warp(made_{n-1}, flow_{n -> n-1})
  * 0.5 + made_n * 0.5`` (with the consistency check, the warped share is 0 where it fails). Frame 0
  is written as made. The next frame still starts from the frame as made.

Pictures are (H, W, 3) uint8 arrays of the output's size; blends are rounded to the nearest value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .optical_flow import consistency_mask, warp_with_flow

__all__ = ["VIDEO_BLEND", "FlowOf", "VideoFlow", "blend", "flow_start", "written_frame"]

VIDEO_BLEND = 0.5  # the notebook's "Create video" cell: blend = 0.5
# RAFT between two (H, W, 3) uint8 pictures: the (2, H, W) flow from the first to the second
FlowOf = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class VideoFlow:
    """The motion from one video frame back to the one before, as the flow steps use it."""

    backward: np.ndarray  # (2, H, W): from video frame n to video frame n - 1, in pixels
    reliable: (
        np.ndarray | None
    )  # (H, W) 1 where ``backward`` passes the consistency check, 0 elsewhere; None: unchecked

    @classmethod
    def between(cls, previous: np.ndarray, current: np.ndarray, flow_of: FlowOf, check_consistency: bool) -> VideoFlow:
        """RAFT's flow from ``current`` back to ``previous`` (video frames n and n - 1) and, with
        ``check_consistency``, its forward-backward mask (a second flow, from ``previous`` to ``current``)."""
        backward = flow_of(current, previous)
        reliable = consistency_mask(backward, flow_of(previous, current)) if check_consistency else None
        return cls(backward, reliable)

    def carried(self, made: np.ndarray) -> np.ndarray:
        """``made`` (frame n - 1 as made) carried along the motion onto frame n."""
        return warp_with_flow(made, self.backward)

    def weight(self, share: float) -> np.ndarray | float:
        """The carried picture's share of a blend: ``share``, 0 where the flow is unreliable."""
        return share if self.reliable is None else share * self.reliable[..., None]


def blend(base: np.ndarray, other: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """``base * (1 - weight) + other * weight``, rounded to uint8; ``weight`` a number or (H, W, 1)."""
    mixed = base.astype(np.float64) * (1 - np.asarray(weight)) + other.astype(np.float64) * np.asarray(weight)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def flow_start(video: np.ndarray, previous_made: np.ndarray, motion: VideoFlow, flow_blend: float) -> np.ndarray:
    """Frame n's start with ``video_init_flow_warp``: its video frame blended with frame n - 1 as made,
    carried along ``motion``, by ``flow_blend`` (``video_init_flow_blend``; see the module)."""
    return blend(video, motion.carried(previous_made), motion.weight(flow_blend))


def written_frame(
    made: np.ndarray, previous_made: np.ndarray | None, motion: VideoFlow | None, mode: str
) -> np.ndarray:
    """Frame n as written for ``video_init_blend_mode`` ``mode`` (see the module): ``made`` itself for
    ``"None"`` and for frame 0 (``previous_made`` None), else half and half with frame n - 1 as made
    (``"linear"``) or with it carried along ``motion`` (``"optical flow"``, which needs ``motion``)."""
    if mode == "None" or previous_made is None:
        return made
    if mode == "linear":
        return blend(made, previous_made, VIDEO_BLEND)
    if mode == "optical flow":
        if motion is None:
            raise ValueError("video_init_blend_mode 'optical flow' needs the video's motion")
        return blend(made, motion.carried(previous_made), motion.weight(VIDEO_BLEND))
    raise ValueError(f"video_init_blend_mode must be 'None', 'linear' or 'optical flow', got {mode!r}")
