"""Animation: the Disco Diffusion notebook's frame loop for 2D and 3D motion and video input.

One animation is ``max_frames`` images made one after another by ``sample_image``:

- ``2D``: frame 0 is an ordinary image (noise, ``init_image`` or perlin, with ``skip_steps`` and
  ``init_scale``). Frame ``n`` starts from frame ``n - 1`` as a PNG would hold it (8 bits),
  moved by frame ``n``'s ``angle``, ``zoom`` and ``translation_x``/``_y`` (``warp_2d``, borders
  wrapped around), skips ``frames_skip_steps`` of the steps and is pulled towards that start
  with ``init_scale = frames_scale``.
- ``3D``: as 2D, but frame ``n - 1`` is moved by a camera: its depth is estimated (MiDaS and
  AdaBins blended by ``midas_weight``, ``disco.depth``) and the camera moves by frame ``n``'s
  ``translation_x``/``_y``/``_z`` and ``rotation_3d_x``/``_y``/``_z`` (``disco.warp3d``).
  With ``turbo_mode``, after ``turbo_preroll`` only every ``turbo_steps``-th frame is sampled; the
  frames between are the warp of the previous frame blended with the warp, carried along, of the
  last sampled frame's start (``blend = (n % turbo_steps + 1) / turbo_steps`` towards the newer),
  as the notebook does; the next frame then starts from the unblended warp. With ``vr_mode``
  every finished frame (sampled or turbo's) also gets a left and a right eye view
  (``eye_views``: the frame seen through its depth by each eye, the notebook's ``generate_eye_views``).
- ``Video Input``: frame ``n`` starts from the video's ``n``-th extracted frame, every frame with
  ``frames_skip_steps`` and ``frames_scale``, the settings' ``video_init_*`` overrides in place.
  With ``video_init_flow_warp`` frame 0 skips ``skip_steps`` instead, and frame ``n`` > 0 starts
  from frame ``n - 1`` as made, carried along the video's optical flow (RAFT) and blended with its
  video frame by ``video_init_flow_blend``; ``video_init_blend_mode`` blends each frame written
  with the one before (``disco.video_flow``).

Frame ``n`` uses seed ``seed + n`` (the notebook adds one per frame; with
``video_init_seed_continuity`` every video frame uses ``seed``) and the prompts of its frame
(``disco.prompts.prompt_key_at``). So a run resumed at frame ``n`` from frame ``n - 1``'s PNG
makes the same frames as one that was never stopped (a turbo run resumed starts its blending
afresh from the resumed frame's start). A flow-warped Video Input run resumes the same way, from
frame ``n - 1``'s PNG and the video's frames ``n - 1`` on (the flow is RAFT's between video frames
``n - 1`` and ``n``), as the notebook, which warps the saved previous frame, does. A run whose frames
are written blended (``video_init_blend_mode`` other than ``"None"``) keeps only the blend in its
files, so it resumes from frame ``n - 1`` as written, as the notebook's resume does: its next frames
differ a little from those of a run that never stopped, which start from the frame as made.

What a run makes and needs (its frames, each frame's settings and steps, whether LPIPS is needed)
is planned in ``disco.animation_plan`` (re-exported here: ``plan_run``, ``frame_settings``), which
needs no torch, so the client plans with the sampler's own rules before any model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .animation_plan import (
    MOVED_MODES,
    AnimationPlan,
    flow_model_needed,
    frame_settings,
    later_frame_settings,
    plan_run,
    turbo_diffused,
)
from .images import array_to_init, resized_frame, to_uint8_hwc
from .keyframes import keyframe_series
from .packages import opencv
from .sampler import Models, StepReport, sample_image
from .settings import KEYFRAME_3D_SETTINGS, KEYFRAME_SETTINGS, Settings
from .video_flow import VideoFlow, flow_start, written_frame
from .warp3d import EYES, camera_motion, eye_view, warp_3d

__all__ = [
    "AnimationPlan", "FrameStep", "Motion", "PromptsAt", "animate", "camera_series", "eye_views", "frame_seed",
    "frame_settings", "later_frame_settings", "motion_series", "motion_values", "plan_run", "transform_matrix_2d",
    "turbo_blend", "warp_2d", "warp_3d_frame",
]  # fmt: skip

# (embeddings (m, d) by CLIP model, or one tensor for RN50 alone; weights) of the prompts that apply at a frame
PromptsAt = Callable[[int], tuple[torch.Tensor | Mapping[str, torch.Tensor], list[float]]]
# a 3D run's depth estimator: (1, 3, H, W) in [-1, 1] and midas_weight to an (H, W) depth map
DepthOf = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Motion:
    """One frame's 2D motion: degrees counter-clockwise, scale, pixels right and down."""

    angle: float
    zoom: float
    translation_x: float
    translation_y: float


def motion_series(settings: Settings, frames: int | None = None) -> list[Motion]:
    """Every frame's motion, from the key frames of ``angle``, ``zoom``, ``translation_x`` and ``translation_y``."""
    frames = frames or settings.max_frames
    series = [motion_values(settings, name, frames) for name in KEYFRAME_SETTINGS]
    return [Motion(*values) for values in zip(*series, strict=True)]


def motion_values(settings: Settings, name: str, frames: int) -> list[float]:
    """Motion setting ``name``'s value at each of ``frames`` frames: its key frames interpolated
    (``disco.keyframes``), or with ``key_frames`` off its frame-0 value at every frame (the
    notebook then reads each motion setting as one number, used for every frame)."""
    if settings.key_frames:
        return keyframe_series(name, getattr(settings, name), frames)
    return keyframe_series(name, getattr(settings, name), 1) * frames


def transform_matrix_2d(width: int, height: int, motion: Motion) -> np.ndarray:
    """The 3x3 matrix the notebook builds for a frame: a translation by ``(translation_x,
    translation_y)`` pixels, then a rotation by ``angle`` degrees with scale ``zoom`` about the
    centre ``(width // 2, height // 2)``, i.e. ``cv2.getRotationMatrix2D(centre, angle, zoom)``
    times the translation. OpenCV's rotation matrix is ``[[a, b, (1 - a) cx - b cy], [-b, a,
    b cx + (1 - a) cy]]`` with ``a = zoom cos(angle)``, ``b = zoom sin(angle)`` (OpenCV's
    documentation of ``getRotationMatrix2D``)."""
    cx, cy = width // 2, height // 2
    a = motion.zoom * math.cos(math.radians(motion.angle))
    b = motion.zoom * math.sin(math.radians(motion.angle))
    rotation = np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy], [0, 0, 1]], dtype=np.float64)
    translation = np.array(
        [[1, 0, motion.translation_x], [0, 1, motion.translation_y], [0, 0, 1]], dtype=np.float32
    ).astype(np.float64)  # the notebook's translation matrix is float32
    return rotation @ translation


def warp_2d(image: np.ndarray, motion: Motion) -> np.ndarray:
    """``image`` (H, W, 3) uint8 moved by ``motion`` as the notebook moves the previous frame:
    ``cv2.warpPerspective`` with the matrix of ``transform_matrix_2d``, bilinear, the picture
    wrapped around at the borders (``cv2.BORDER_WRAP``). Returns (H, W, 3) uint8."""
    cv2 = opencv()
    height, width = image.shape[:2]
    matrix = transform_matrix_2d(width, height, motion)
    return cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_WRAP)


def camera_series(settings: Settings, frames: int | None = None) -> list[tuple[float, ...]]:
    """Every frame's 3D camera move: ``(translation_x, translation_y, translation_z, rotation_3d_x,
    rotation_3d_y, rotation_3d_z)`` from their key frames (the notebook's units; degrees)."""
    frames = frames or settings.max_frames
    series = [motion_values(settings, name, frames) for name in KEYFRAME_3D_SETTINGS]
    return list(zip(*series, strict=True))


def warp_3d_frame(
    picture: np.ndarray, settings: Settings, move: tuple[float, ...], depth: DepthOf, device: torch.device
) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 as the camera moved by ``move`` (``camera_series``'s six numbers)
    sees it, as the notebook's 3D step does: its depth estimated by ``depth`` (``(1, 3, H, W)`` in
    [-1, 1] and ``midas_weight`` to an (H, W) depth map), then ``warp_3d`` with the settings'
    ``near_plane``, ``far_plane``, ``fov``, ``padding_mode`` and ``sampling_mode``, on ``device``.
    Returns (H, W, 3) uint8."""
    image = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    image = image.to(device)
    depth_map = depth(image, settings.midas_weight)
    translation, rotation = camera_motion(*move)
    warped = warp_3d(
        image, depth_map, translation, rotation, settings.near_plane, settings.far_plane, settings.fov,
        settings.padding_mode, settings.sampling_mode,
    )  # fmt: skip
    return to_uint8_hwc(warped[0].add(1).div(2).cpu())


def eye_views(
    picture: np.ndarray, settings: Settings, depth: DepthOf, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """The left and right eye views of a finished 3D frame for VR (``vr_mode``), as the notebook's
    ``generate_eye_views`` makes them: ``picture`` (H, W, 3) uint8, its depth estimated once by
    ``depth``, each eye's view by ``disco.warp3d.eye_view`` with ``vr_eye_angle``, ``vr_ipd``,
    ``fov``, ``padding_mode`` and ``sampling_mode``. Returns two (H, W, 3) uint8 arrays."""
    image = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    image = image.to(device)
    depth_map = depth(image, settings.midas_weight)
    left, right = (
        eye_view(
            image,
            depth_map,
            eye,
            settings.vr_eye_angle,
            settings.vr_ipd,
            settings.fov,
            settings.padding_mode,
            settings.sampling_mode,
        )  # fmt: skip
        for eye in EYES
    )
    return to_uint8_hwc(left[0].add(1).div(2).cpu()), to_uint8_hwc(right[0].add(1).div(2).cpu())


def turbo_blend(newer: np.ndarray, older: np.ndarray, frame: int, turbo_steps: int) -> np.ndarray:
    """A turbo frame (one not sampled): ``newer`` (the previous frame warped) weighted
    ``(frame % turbo_steps + 1) / turbo_steps`` plus ``older`` (the last sampled frame's start,
    warped along) weighted the rest, rounded as OpenCV's ``addWeighted`` on uint8. Both (H, W, 3)
    uint8; returns (H, W, 3) uint8."""
    blend = (frame % turbo_steps + 1) / turbo_steps
    mixed = newer.astype(np.float64) * blend + older.astype(np.float64) * (1 - blend)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


@dataclass
class FrameStep:
    """One diffusion step of one frame of an animation (a turbo frame, made by the warp alone, is
    one ``FrameStep`` whose report has 0 steps, ``total`` 0)."""

    frame: int  # the frame being made, 0-based
    frames: int  # frames in the animation
    seed: int  # the frame's seed
    report: StepReport  # the step within the frame (its image on display steps)
    finished: np.ndarray | None = None  # (H, W, 3) uint8, when this step finished the frame
    eyes: tuple[np.ndarray, np.ndarray] | None = None  # vr_mode: the finished frame's left and right views


def frame_seed(settings: Settings, seed: int, frame: int) -> int:
    """Frame ``frame``'s seed: ``seed + frame``, or ``seed`` for every frame of a video with
    ``video_init_seed_continuity``."""
    if settings.animation_mode == "Video Input" and settings.video_init_seed_continuity:
        return seed
    return seed + frame


def animate(
    settings: Settings,
    prompts_at: PromptsAt,
    models: Models,
    seed: int,
    *,
    start_frame: int = 0,
    init_image: torch.Tensor | None = None,
    previous_frame: np.ndarray | None = None,
    video_frames: Iterable[np.ndarray] | None = None,
    frames: int | None = None,
    previous_video_frame: np.ndarray | None = None,
) -> Iterator[FrameStep]:
    """Make frames ``start_frame .. frames - 1``, yielding every step of each (stop iterating to stop).

    ``init_image``: frame 0's init image (1, 3, H, W) in [-1, 1] (2D, 3D). ``previous_frame``: frame
    ``start_frame - 1`` as (H, W, 3) uint8, needed to resume a 2D or 3D animation, and a Video Input
    animation with ``video_init_flow_warp`` (with ``previous_video_frame``, the video's extracted frame
    ``start_frame - 1``, (h, w, 3) uint8). ``video_frames``: the video's extracted frames from
    ``start_frame`` on, (h, w, 3) uint8 of any size (resized to the output). ``frames``: how many
    frames the animation has (default ``max_frames``; for a video at most its number of extracted
    frames). A 3D run needs ``models.depth``, a Video Input run with optical flow
    (``flow_model_needed``) ``models.flow``; one resumed (``start_frame`` > 0) with optical flow
    ``previous_frame`` and ``previous_video_frame`` (written blended: the frame as written, the module's
    note). Raises ValueError otherwise. A turbo frame (not
    sampled) is one ``FrameStep`` whose report has ``total`` 0 and the finished frame. A Video Input
    frame's ``finished`` is the frame as written (``video_init_blend_mode``).
    """
    mode = settings.animation_mode
    frames = frames or settings.max_frames
    if mode in MOVED_MODES:
        motion = motion_series(settings, frames) if mode == "2D" else camera_series(settings, frames)
        if start_frame > 0 and previous_frame is None:
            raise ValueError(f"resuming a {mode} animation at frame {start_frame} needs frame {start_frame - 1}")
        if mode == "2D" and frames > max(start_frame, 1):
            opencv()  # a frame will be warped: a missing OpenCV fails before any work, not after frame 0
        if mode == "3D" and (frames > max(start_frame, 1) or settings.vr_mode) and models.depth is None:
            raise ValueError("a 3D animation needs a depth model (models.depth)")
    elif mode == "Video Input":
        if video_frames is None:
            raise ValueError("Video Input needs the video's frames")
        video = iter(video_frames)
        flowing = flow_model_needed(settings) and frames > max(start_frame, 1)
        if flowing and models.flow is None:
            raise ValueError("Video Input with optical flow needs a flow model (models.flow)")
        if flowing and start_frame > 0:
            if previous_frame is None or previous_video_frame is None:
                raise ValueError(
                    f"resuming a flow-warped Video Input animation at frame {start_frame} needs frame "
                    f"{start_frame - 1} and the video's frame {start_frame - 1}"
                )
        if flowing:
            opencv()  # a frame will be warped: a missing OpenCV fails before any work, not after frame 0
    else:
        raise ValueError(f"animation_mode must be '2D', '3D' or 'Video Input' for an animation, got {mode!r}")
    turbo = (settings.turbo_steps, settings.turbo_preroll) if mode == "3D" and settings.turbo_mode else (0, 0)
    previous, older = previous_frame, None  # older: turbo's warp of the last sampled frame's start
    previous_video, video_motion = None, None  # Video Input with optical flow: video frame n - 1, the motion to n
    if mode == "Video Input" and flowing and start_frame > 0:  # resumed: frame n - 1 as made, its video frame
        previous_video = resized_frame(previous_video_frame, settings.width, settings.height)

    def vr(finished: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:  # a finished frame's eye views
        return eye_views(finished, settings, models.depth.depth, models.device) if settings.vr_mode else None

    for n in range(start_frame, frames):
        if n > 0 and mode in MOVED_MODES:
            if mode == "2D":
                moved = warp_2d(previous, motion[n])
            else:
                moved = warp_3d_frame(previous, settings, motion[n], models.depth.depth, models.device)
            if turbo[0] and n >= turbo[1]:
                older = (
                    moved
                    if older is None or n == turbo[1]
                    else warp_3d_frame(older, settings, motion[n], models.depth.depth, models.device)
                )
                if not turbo_diffused(n, *turbo):
                    finished, previous = turbo_blend(moved, older, n, turbo[0]), moved
                    image = torch.from_numpy(finished).permute(2, 0, 1).float().div(255)
                    report = StepReport(0, 0, -1, image, None)  # no step: the warp alone made it
                    yield FrameStep(n, frames, frame_seed(settings, seed, n), report, finished, vr(finished))
                    continue
                older = moved  # a sampled frame: the blending restarts from its start
            start = array_to_init(moved, settings.width, settings.height)
        elif mode in MOVED_MODES:
            start = init_image
        else:
            picture = next(video, None)
            if picture is None:
                return  # the video has fewer frames than announced
            if flowing:
                current = resized_frame(picture, settings.width, settings.height)
                if previous_video is not None:
                    video_motion = VideoFlow.between(
                        previous_video, current, models.flow.flow, settings.video_init_check_consistency
                    )
                    if settings.video_init_flow_warp:
                        picture = flow_start(current, previous, video_motion, settings.video_init_flow_blend)
                previous_video = current
            start = array_to_init(picture, settings.width, settings.height)
        embeds, weights = prompts_at(n)
        seed_n = frame_seed(settings, seed, n)
        sampled = frame_settings(settings, n)  # as the plan counted its steps and models
        made_before = previous
        for report in sample_image(sampled, embeds, weights, models, seed=seed_n, init_image=start):
            finished = eyes = None
            if report.step == report.total:
                finished = previous = to_uint8_hwc(report.image)
                blend_mode = settings.video_init_blend_mode
                if mode == "Video Input" and blend_mode != "None" and made_before is not None:
                    # as written; the next frame starts from it as made (previous)
                    finished = written_frame(finished, made_before, video_motion, blend_mode)
                eyes = vr(finished)
            yield FrameStep(n, frames, seed_n, report, finished, eyes)
