"""An animation's plan: what a run makes and needs, decided once before it starts.

The client asks the plan which model files to fetch and how many steps to expect; the sampler
which models to load, where the run starts and what to report. Both ask, neither decides on
its own, so they cannot disagree (e.g. on whether a video's frames need LPIPS and its VGG16).

A frame is sampled with the run's settings when it starts from noise, perlin or the init image
(a still image, a 2D or 3D animation's frame 0), and with ``later_frame_settings`` when it starts
from a picture made from another frame (every later 2D or 3D frame, every video frame but a
flow-warped run's first). A Video Input run's settings are first given its ``video_init_*``
overrides (``with_video_init_overrides``); with ``video_init_flow_warp`` its frame 0 skips
``skip_steps`` (the notebook's ``video_init_skip_steps``) and is pulled towards its video frame by
``frames_scale``, and RAFT is needed (``flow_model``), as it is for ``video_init_blend_mode``
"optical flow". With
``turbo_mode`` (3D) the frames after ``turbo_preroll`` that are not a multiple of ``turbo_steps``
are not sampled at all: they come from the depth warp alone (``AnimationPlan.diffused``). This module needs
no torch: the client imports it to plan before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .settings import Settings, frames_skip_steps, with_video_init_overrides
from .tiling import gobig_steps

if TYPE_CHECKING:  # disco.video needs torch (through disco.images); the plan reads only two of its numbers
    from .video import VideoInfo

__all__ = [
    "MOVED_MODES", "AnimationPlan", "depth_models", "flow_model_needed", "frame_settings", "later_frame_settings",
    "plan_run", "turbo_diffused",
]  # fmt: skip

MOVED_MODES = ("2D", "3D")  # each frame after the first starts from the previous one, moved


def later_frame_settings(settings: Settings) -> Settings:
    """The settings of a frame that starts from a picture made from another frame (every 2D or 3D
    frame after the first, every video frame): ``frames_skip_steps`` skipped, ``init_scale =
    frames_scale``, no perlin noise."""
    return replace(
        settings, skip_steps=frames_skip_steps(settings), init_scale=settings.frames_scale, perlin_init=False
    )


def frame_settings(settings: Settings, frame: int) -> Settings:
    """The settings frame ``frame`` is sampled with: the settings themselves for a still image
    (``animation_mode`` ``None``) and for a 2D or 3D animation's frame 0, else ``later_frame_settings``.
    Video Input: the settings with their ``video_init_*`` overrides in place, then for frame 0 of a
    flow-warped run (``video_init_flow_warp``, as the notebook's ``do_run``) its ``skip_steps`` with
    ``init_scale = frames_scale``, for every other frame ``later_frame_settings``."""
    if settings.animation_mode == "None" or (settings.animation_mode in MOVED_MODES and frame == 0):
        return settings
    if settings.animation_mode == "Video Input":
        run = with_video_init_overrides(settings)
        if frame == 0 and settings.video_init_flow_warp:
            return replace(run, init_scale=run.frames_scale, perlin_init=False)
        return later_frame_settings(run)
    return later_frame_settings(settings)


@dataclass(frozen=True)
class AnimationPlan:
    """What a run makes and needs, decided before it starts (``plan_run``): the client asks it
    which model files to fetch and how long the run is; the sampler which models to load and
    what to report. A still image (``animation_mode`` ``None``) is a run of one frame."""

    mode: str  # animation_mode
    start_frame: int  # the first frame this run makes
    frames: int  # frames of the whole animation (1 for a still image)
    fps: float  # the MP4's frame rate (a video's own pace for Video Input)
    first_steps: int  # diffusion steps of the first frame made
    later_steps: int  # diffusion steps of each frame after it
    with_init_loss: bool  # some frame made is pulled towards a picture: LPIPS, which needs VGG16
    depth_models: tuple[str, ...] = ()  # 3D: "midas" and/or "adabins", as midas_weight blends them
    turbo_steps: int = 0  # 3D with turbo_mode: only every this many frames is diffused (0: every frame)
    turbo_preroll: int = 0  # 3D with turbo_mode: frames up to this one are all diffused
    flow_model: bool = False  # Video Input: RAFT's optical flow is needed (flow_model_needed)
    gobig_steps: int = 0  # a still image with gobig: the steps of its enlargement's tiles (disco.tiling)

    @property
    def complete(self) -> bool:
        """Nothing is left to make (a resumed run whose every frame is already there)."""
        return self.start_frame >= self.frames

    @property
    def made(self) -> range:
        """The frames this run makes; for Video Input also the video's extracted frames it reads."""
        return range(self.start_frame, self.frames)

    @property
    def run_steps(self) -> int:
        """Diffusion steps of every frame this run makes (0 when it is ``complete``), a still image's
        GoBig tiles included."""
        return sum(self.steps_of(n) for n in self.made) + self.gobig_steps

    def diffused(self, frame: int) -> bool:
        """Whether frame ``frame`` is sampled; with turbo (``turbo_steps`` > 0) only the frames up to
        ``turbo_preroll`` and then every ``turbo_steps``-th frame are, as in the notebook."""
        return turbo_diffused(frame, self.turbo_steps, self.turbo_preroll)

    def steps_of(self, frame: int) -> int:
        """Diffusion steps frame ``frame`` takes (the steps its settings do not skip; 0 for a frame
        made by turbo's warp alone)."""
        if not self.diffused(frame):
            return 0
        return self.first_steps if frame == self.start_frame else self.later_steps


def plan_run(
    settings: Settings,
    *,
    init_image: bool = False,
    start_frame: int = 0,
    video: VideoInfo | None = None,
) -> AnimationPlan:
    """The plan of a run of ``settings`` (validated). ``init_image``: whether frame 0 is given an
    init image (read for a still image and a 2D animation's frame 0 only; a video's frames are
    their own starts); ``start_frame``: the first frame to make (a resumed animation, > 0);
    ``video``: Video Input's video (``disco.video.video_info``), which bounds ``frames`` by its
    extracted frames and sets ``fps`` to its pace. Raises ``ValueError`` for Video Input without
    ``video`` or for a mode other than ``None``, ``2D``, ``3D`` and ``Video Input``."""
    mode = settings.animation_mode
    if mode == "None":
        frames, fps, start_frame = 1, settings.fps, 0
    elif mode in MOVED_MODES:
        frames, fps = settings.max_frames, settings.fps
    elif mode == "Video Input":
        if video is None:
            raise ValueError("planning a Video Input animation needs its video")
        nth = settings.extract_nth_frame
        frames = min(settings.max_frames, video.extracted(nth))
        fps = float(video.rate / nth) if video.rate else settings.fps
    else:
        raise ValueError(f"animation_mode must be 'None', '2D', '3D' or 'Video Input', got {mode!r}")

    def has_start(n: int) -> bool:  # the frame starts from a picture (else from noise or perlin)
        return init_image if frame_settings(settings, n) is settings else True

    def steps(n: int) -> int:
        s = frame_settings(settings, n)
        return 0 if s.gobig_from_init else s.steps - s.skip_steps

    # frames after the first made all sample alike: the first two made tell everything
    sampled = range(start_frame, min(frames, start_frame + 2))
    with_init_loss = any(has_start(n) and max(frame_settings(settings, n).schedule("init_scale")) > 0 for n in sampled)
    later = steps(start_frame + 1) if mode != "None" else 0
    turbo = (settings.turbo_steps, settings.turbo_preroll) if mode == "3D" and settings.turbo_mode else (0, 0)
    # 3D: depth to warp a frame into the next, and (vr_mode) to make each frame's eye views
    warps = frames > max(start_frame, 1) or settings.vr_mode
    depth = depth_models(settings) if mode == "3D" and warps else ()
    flow = flow_model_needed(settings) and frames > max(start_frame, 1)
    tiles = 0
    if settings.gobig and mode == "None":
        s = settings
        tiles = gobig_steps(s.width, s.height, s.steps, s.gobig_scale, s.gobig_skip_ratio, s.gobig_overlap)
    return AnimationPlan(
        mode, start_frame, frames, fps, steps(start_frame), later, with_init_loss, depth, *turbo, flow_model=flow,
        gobig_steps=tiles,
    )  # fmt: skip


def turbo_diffused(frame: int, turbo_steps: int, turbo_preroll: int) -> bool:
    """Whether turbo samples frame ``frame`` (``turbo_steps`` 0: turbo is off, every frame is
    sampled): the frames up to ``turbo_preroll``, then the multiples of ``turbo_steps``."""
    return not turbo_steps or frame <= turbo_preroll or frame % turbo_steps == 0


def depth_models(settings: Settings) -> tuple[str, ...]:
    """The depth networks a 3D run of ``settings`` estimates depth with: ``midas`` unless
    ``midas_weight`` is 0, ``adabins`` unless it is 1 (the notebook's blend)."""
    return tuple(
        name for name, used in (("midas", settings.midas_weight > 0), ("adabins", settings.midas_weight < 1)) if used
    )


def flow_model_needed(settings: Settings) -> bool:
    """Whether a Video Input run of ``settings`` of more than one frame uses RAFT's optical flow: for
    ``video_init_flow_warp`` (each frame starts from the previous one carried along the video) or for
    ``video_init_blend_mode`` ``"optical flow"`` (each frame written is blended with the previous one
    carried along). Other modes never do."""
    return settings.animation_mode == "Video Input" and (
        settings.video_init_flow_warp or settings.video_init_blend_mode == "optical flow"
    )
