"""The field table: every setting's default, type, meaning and limits, as the ``Settings`` dataclass.

The seed API's parameters keep the PaddleHub module's names and defaults; the Disco Diffusion
extras are keyword-only there and carry the module's defaults. The ``Settings`` fields are the
one source of each setting's default and type: the client's signature and command line, the wire
protocol's number restoring, the coercion of every value and the web page's form are read from them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from ..clip_catalog import CLIP_MODELS, CLIP_SPECS, DEFAULT_CLIP_MODEL
from ..cut_presets import AUTO_GROUP, CUT_SCHEDULE_GROUPS
from ..models import DEFAULT_MODEL
from ..models import DIFFUSION_MODELS as MODELS
from .schedules import parse_schedule
from .texts import (
    ANIMATION_MODES,
    BATCH_NAME_ALLOWED,
    CHECKPOINT_ALLOWED,
    DIFFUSION_MODELS,
    KEYFRAMES,
    LIGHTHOUSE,
    MAX_BATCHES,
    MAX_FRAMES,
    MAX_STEPS,
    MAX_TRANSFORMATIONS,
    MIDAS_DEPTH_MODELS,
    PADDING_MODES,
    PERCENTAGE_ALLOWED,
    PERLIN_MODES,
    SAMPLING_MODES,
    SCALE_ALLOWED,
    SCHEDULE,
    VIDEO_BLEND_MODES,
    WARP_SAMPLING_MODES,
)
from .yaml_io import write_yaml

# A GIF stores each frame's delay in hundredths of a second, and browsers show delays under 2 of them
# as 10: 50 frames a second is the fastest a GIF plays as written.
GIF_MAX_FPS = 50
MAX_BATCH_SIZE = 8  # images painted together in one sampler call: each adds its pixels to every step's memory


def setting(
    default: Any = None,
    meaning: str = "",
    *,
    factory: Any = None,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    choice_meanings: Mapping[str, str] | None = None,
    allowed: str | None = None,
    shown: str | None = None,
) -> Any:
    """A field of ``Settings``: its default, what it means (``--help``) and what is allowed.

    ``low``, ``high`` and ``choices`` are the limits the validator enforces; ``choice_meanings``
    says in one line what each choice is for; ``allowed`` words the limits the validator checks in
    code of its own (e.g. multiples of 64; with ``choices``: what else is allowed); ``shown`` is
    the default as ``--help`` writes it, when its repr is not helpful.
    """
    meta = {
        "meaning": meaning,
        "low": low,
        "high": high,
        "choices": choices,
        "choice_meanings": choice_meanings,
        "allowed": allowed,
        "shown": shown,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Every generation setting, one field each; ``validate_settings`` makes checked ones."""

    # The seed API (PaddleHub disco_diffusion_clip_rn50), in its order.
    text_prompts: list[str | dict[str, Any]] | dict[int, list[str | dict[str, Any]]] = setting(
        meaning="what to paint; 'text:weight' per prompt (weights may be negative, must not sum to 0; a weight may "
        "also be a schedule over the 1000 virtual steps, e.g. 'a lighthouse:[1]*500+[0]*500'), or "
        '{"text": ..., "weight": ..., "clip_models": [...]} to give a prompt to some of clip_models only; for an '
        "animation also {frame: [prompts], ...}: the latest key at or before a frame applies",
        factory=lambda: [LIGHTHOUSE, "yellow color scheme"],
        allowed="one or more prompts of at most 77 CLIP tokens (unless truncate_overlength_prompt), or a JSON "
        "object of frame numbers to such lists",
        shown="the lighthouse prompt and 'yellow color scheme'",
    )
    init_image: str | bytes | None = setting(None, "start from this image instead of noise", allowed="a path or URL")
    width_height: list[int] = setting(
        meaning="output width and height",
        factory=lambda: [1280, 768],
        allowed="multiples of 64, at most the server's pixel cap (2048x2048 unless DISCO_MAX_PIXELS is set)",
        shown="1280 768",
    )
    skip_steps: int = setting(
        10, "skip the first (noisiest) steps; larger keeps more of an init image", low=0, allowed="0 to steps - 1"
    )
    steps: int = setting(250, "diffusion steps; more is slower and finer", low=1, high=MAX_STEPS)
    init_scale: float | str = setting(
        1000, "how strongly the result stays like init_image (LPIPS loss)", allowed=SCALE_ALLOWED
    )
    clip_guidance_scale: float | str = setting(
        5000, "how strongly the image follows the prompts", allowed=SCALE_ALLOWED
    )
    tv_scale: float | str = setting(0, "smoothness (total variation) loss; 0 is off", allowed=SCALE_ALLOWED)
    range_scale: float | str = setting(
        150, "penalty on values outside the colour range; 0 is off", allowed=SCALE_ALLOWED
    )
    sat_scale: float | str = setting(0, "saturation penalty; 0 is off", allowed=SCALE_ALLOWED)
    perlin_init: bool = setting(False, "start from perlin noise instead of Gaussian noise")
    perlin_mode: str = setting("mixed", "the perlin noise's colours", choices=PERLIN_MODES)
    seed: int | None = setting(
        None, "random seed; image i uses seed + i", low=0, high=2**32 - 1, shown="a random seed, reported"
    )
    display_rate: int = setting(10, "keep a frame every this many steps (and the last)", low=1)
    n_batches: int = setting(4, "how many images", low=1, high=MAX_BATCHES)
    batch_name: str = setting("", "part of the output file names", allowed=BATCH_NAME_ALLOWED)
    use_gpu: bool = setting(True, "use the GPU when there is one (a remote Flow decides for itself)")
    output_dir: str = setting(
        "disco_diffusion_clip_rn50_out", "where the PNGs, GIFs and sprite sheets go", allowed="a directory"
    )
    # Disco Diffusion extras (keyword-only in the API).
    style: str | None = setting(None, "a style, appended to the first prompt's text as ',STYLE' (as the module does)")
    artist: str | None = setting(
        None, "an artist, appended to the first prompt's text as ',ARTIST,trending on artstation' (as the module does)"
    )
    intermediate_saves: Annotated[int | list[int], "steps"] = setting(
        0,
        "also save the image at some steps into output_dir/partials: a count N saves every "
        "(steps - skip_steps - 1) // (N + 1)-th step (the notebook's spacing), a list saves at those steps "
        "([5, 9, 34]); 0 saves none",
        allowed="a whole number >= 0, or a list of step numbers >= 1 such as [5, 9, 34]",
    )
    cutn_batches: int | str = setting(
        4,
        "batches of cutouts CLIP judges at each step; a step's time grows with it",
        low=1,
        high=64,
        allowed=f"a whole number 1 to 64, or such numbers as {SCHEDULE}",
    )
    diffusion_sampling_mode: str = setting("ddim", "the sampler", choices=SAMPLING_MODES)
    eta: float = setting(0.8, "DDIM's noise: 0 is deterministic, 1 adds the most", low=0.0, high=1.0)
    clamp_grad: bool | str = setting(
        True,
        "clamp the guidance gradient to clamp_max",
        allowed=f"true or false, or true/false (1/0) values as {SCHEDULE}, e.g. [True]*500+[False]*500",
    )
    clamp_max: float | str = setting(
        0.05,
        "the largest guidance gradient when clamp_grad is on",
        low=0.0,
        allowed=f"a number > 0 (>= 0 with clamp_grad off), or such numbers as {SCHEDULE}",
    )
    randomize_class: bool = setting(
        True,
        "kept for the module's signature: it picks a random ImageNet class for class-conditional models, "
        "and every diffusion model here is unconditional, so it changes nothing",
    )
    clip_denoised: bool = setting(False, "clip the model's denoised estimate to [-1, 1]")
    fuzzy_prompt: bool = setting(False, "add random noise (rand_mag) to the prompt embeddings")
    rand_mag: float = setting(0.05, "how much noise fuzzy_prompt adds", low=0.0)
    cut_overview: str | None = setting(
        "[12]*400+[4]*600",
        "whole-image cutouts per batch, by step",
        allowed=f"cutout counts as {SCHEDULE}",
    )
    cut_innercut: str | None = setting(
        "[4]*400+[12]*600",
        "zoomed-in cutouts per batch, by step",
        allowed=f"cutout counts as {SCHEDULE}",
    )
    cut_ic_pow: float | str | None = setting(
        1,
        "how small the zoomed-in cutouts get (larger: smaller)",
        allowed=f"a number > 0, or {SCHEDULE}",
    )
    cut_icgray_p: str | None = setting(
        "[0.2]*400+[0]*600",
        "the chance that a cutout is grey, by step",
        allowed=f"probabilities 0 to 1 as {SCHEDULE}",
    )
    cut_schedules_group: str = setting(
        AUTO_GROUP,
        "the preset that fills the cut settings left at their defaults (cut_overview, cut_innercut, cut_ic_pow, "
        "cut_icgray_p); a cut setting given another value always wins",
        choices=(AUTO_GROUP, *CUT_SCHEDULE_GROUPS),
        choice_meanings={
            AUTO_GROUP: "the diffusion model's own, as the notebook switches: pad_or_pulp for the pixel-art and pulp "
            "sci-fi models, watercolor for the watercolor ones, else default",
            "default": "the notebook's standard schedules",
            "pad_or_pulp": "the notebook's schedules for KaliYuga's pixel-art and pulp sci-fi models",
            "watercolor": "the notebook's schedules for KaliYuga's watercolor models",
        },
    )
    batch_size: int = setting(
        1,
        "images painted together in one sampler call (discoart's): each batch of n_batches makes batch_size "
        "images from one seed, guided together (the same cutout positions for all); n_batches x batch_size "
        "images in all. Still images only, not with gobig; the pixel caps count every image of a batch",
        low=1,
        high=MAX_BATCH_SIZE,
    )
    gif_fps: float = setting(
        20, "frames per second of each image's GIF of its frames (discoart's)", low=1, high=GIF_MAX_FPS
    )
    gif_size_ratio: float = setting(
        0.5, "the GIF's size relative to the image's (discoart's): smaller, a smaller file", low=0.05, high=1
    )
    gobig: bool = setting(
        False,
        "GoBig (progrockdiffusion's): after the image, enlarge it gobig_scale times and diffuse it again in "
        "overlapping tiles of width_height, each tile starting from its part of the enlarged picture; memory "
        "stays that of one tile. Still images only",
    )
    gobig_scale: int = setting(2, "GoBig: how many times wider and taller the enlarged image is", low=2, high=4)
    gobig_skip_ratio: float = setting(
        0.6,
        "GoBig: the share of steps each tile skips (more keeps the picture, less adds new detail)",
        low=0,
        high=0.95,
    )
    gobig_overlap: int = setting(
        64,
        "GoBig: pixels neighbouring tiles share, blended linearly from one tile into the next",
        low=0,
        allowed="less than half the smaller side of width_height",
    )
    gobig_from_init: bool = setting(
        False,
        "GoBig: enlarge init_image itself (an image made before, at width_height) instead of diffusing one "
        "first: the follow-up to a finished image",
    )
    diffusion_model: str = setting(
        DEFAULT_MODEL,
        "the diffusion model: what kind of picture it paints",
        choices=DIFFUSION_MODELS,
        choice_meanings={name: model.description for name, model in MODELS.items()},
        allowed=CHECKPOINT_ALLOWED,
    )
    use_secondary_model: bool | str = setting(
        True,
        "let the small secondary model make the denoised estimate CLIP sees (faster, less memory); by step as a "
        "schedule: the UNet makes it where the schedule is false",
        allowed=f"true or false, or true/false (1/0) values as {SCHEDULE}, e.g. [True]*500+[False]*500",
    )
    skip_augs: bool = setting(False, "skip the random augmentations of the cutouts")
    clip_models: list[str] = setting(
        meaning="the CLIP models that judge the image (open_clip's model::pretrained names); each gets its own "
        "cutouts at its input size and its own prompt embeddings, and their losses add up (each model adds its "
        "time and memory)",
        factory=lambda: [DEFAULT_CLIP_MODEL],
        choices=CLIP_MODELS,  # each element's (a form offers them; the validator checks them in _clip_models)
        choice_meanings={name: spec.about for name, spec in CLIP_SPECS.items()},
        shown=DEFAULT_CLIP_MODEL,
    )
    clip_models_schedules: Annotated[dict[str, str] | None, "model_schedules"] = setting(
        None,
        "turn each CLIP model of clip_models on or off by step (discoart's clip_models_schedules): a model off at a "
        "step adds no loss there; models not named are on at every step",
        allowed=f"model names of clip_models, each with true/false (1/0) values as {SCHEDULE}: a mapping, or "
        "'MODEL=SCHEDULE' entries separated by ';' or new lines",
        shown="every model at every step",
    )
    image_prompts: Annotated[list[str | bytes], "images"] = setting(
        meaning="images to paint towards (the notebook's image_prompts): 'path:weight' per image; CLIP judges "
        "the picture against cutouts of each image by every model of clip_models, their weights beside the text "
        "prompts' (the client reads files and sends their bytes)",
        factory=list,
        allowed="image files' paths, image bytes or data: URIs, each with an optional ':weight'",
        shown="none",
    )
    truncate_overlength_prompt: bool = setting(
        False, "cut prompts longer than a CLIP model takes (77 tokens) to its length instead of refusing them"
    )
    use_horizontal_symmetry: bool = setting(
        False, "at transformation_percent of the run, mirror the image's left half onto its right half"
    )
    use_vertical_symmetry: bool = setting(
        False, "at transformation_percent of the run, mirror the image's top half onto its bottom half"
    )
    transformation_percent: list[float] = setting(
        meaning="when the symmetry settings mirror the image: fractions of the sampled steps (0.09: after 9%)",
        factory=lambda: [0.09],
        allowed=f"1 to {MAX_TRANSFORMATIONS} fractions, each between 0 and 1 (both excluded)",
        shown="0.09",
    )

    # Animation (the Disco Diffusion notebook's "Animation Settings"): one job makes every frame.
    animation_mode: str = setting(
        "None",
        "None: still images; 2D: each frame starts from the previous one moved by angle, zoom and translation; "
        "3D: each frame starts from the previous one seen by a camera moved through its depth map (MiDaS and "
        "AdaBins) by translation_x/_y/_z and rotation_3d_x/_y/_z; Video Input: each frame starts from a frame of "
        "video_init_path",
        choices=ANIMATION_MODES,
    )
    max_frames: int = setting(
        MAX_FRAMES, "frames of an animation (Video Input: at most this many of the video's)", low=1, high=MAX_FRAMES
    )
    angle: str = setting("0:(0)", "2D: rotation per frame in degrees, counter-clockwise", allowed=KEYFRAMES)
    zoom: str = setting("0: (1), 10: (1.05)", "2D: scale per frame (1: none, above 1 zooms in)", allowed=KEYFRAMES)
    translation_x: str = setting(
        "0: (0)", "2D: pixels per frame to the right; 3D: the camera's move to the right per frame", allowed=KEYFRAMES
    )
    translation_y: str = setting(
        "0: (0)", "2D: pixels per frame downwards; 3D: the camera's move downwards per frame", allowed=KEYFRAMES
    )
    translation_z: str = setting(
        "0: (10.0)", "3D: the camera's move forwards per frame (positive zooms in)", allowed=KEYFRAMES
    )
    rotation_3d_x: str = setting("0: (0)", "3D: the camera's tilt per frame in degrees (x axis)", allowed=KEYFRAMES)
    rotation_3d_y: str = setting("0: (0)", "3D: the camera's pan per frame in degrees (y axis)", allowed=KEYFRAMES)
    rotation_3d_z: str = setting(
        "0: (0)", "3D: the camera's roll per frame in degrees (about the view axis)", allowed=KEYFRAMES
    )
    key_frames: bool = setting(
        True,
        "read angle, zoom, translation_x/_y/_z and rotation_3d_x/_y/_z as key frames; off: each is one number for "
        "every frame (a key-frame text gives its frame-0 value)",
    )
    midas_depth_model: str = setting("dpt_large", "3D: the MiDaS depth model", choices=MIDAS_DEPTH_MODELS)
    midas_weight: float = setting(
        0.3,
        "3D: MiDaS's share of the depth map, the rest AdaBins's (1: MiDaS alone, 0: AdaBins alone)",
        low=0.0,
        high=1.0,
    )
    near_plane: float = setting(200, "3D: the camera's near clipping plane (checked; the warp ignores it)", low=0.0)
    far_plane: float = setting(10000, "3D: the camera's far clipping plane (checked; the warp ignores it)", low=0.0)
    fov: float = setting(40, "3D: the camera's vertical field of view in degrees", low=1.0, high=179.0)
    padding_mode: str = setting("border", "3D: what is seen past the frame's edge", choices=PADDING_MODES)
    sampling_mode: str = setting("bicubic", "3D: how the moved frame is resampled", choices=WARP_SAMPLING_MODES)
    turbo_mode: bool = setting(
        False,
        "3D: diffuse only every turbo_steps-th frame after turbo_preroll; the frames between come from the warp "
        "alone, blended from the last two diffused frames (2x-4x faster, less new detail)",
    )
    turbo_steps: int = setting(3, "3D with turbo_mode: diffuse every this many frames", low=2, high=6)
    turbo_preroll: int = setting(10, "3D with turbo_mode: frames diffused before turbo starts", low=0)
    vr_mode: bool = setting(
        False,
        "3D: also write a left and a right eye view of every frame ({frame}_l.png, {frame}_r.png), each the frame "
        "seen through its depth map by an eye moved sideways by vr_ipd / 2 and turned by vr_eye_angle, with a "
        "fish-eye projection (for VR180)",
    )
    vr_eye_angle: float = setting(
        0.5, "3D with vr_mode: how far each eye turns towards the centre, in degrees (y axis)", low=0.0, high=45.0
    )
    vr_ipd: float = setting(
        5.0,
        "3D with vr_mode: the distance between the eyes, in translation_x's units (200 make one unit of the depth map)",
        low=0.0,
    )
    frames_scale: float = setting(
        1500, "animation: how strongly each frame stays like the one it starts from (LPIPS loss)", low=0.0
    )
    frames_skip_steps: str = setting(
        "60%",
        "animation: share of the steps skipped for every frame after the first (Video Input: every frame); "
        "more flickers less but adds less new detail",
        allowed=PERCENTAGE_ALLOWED,
    )
    video_init_path: Annotated[str | bytes | None, "video"] = setting(
        None, "Video Input: the video (the client reads the file and sends its bytes)", allowed="a video file"
    )
    extract_nth_frame: int = setting(2, "Video Input: use every nth frame of the video", low=1)
    video_init_seed_continuity: bool = setting(
        False, "Video Input: every frame uses the same seed (otherwise frame n uses seed + n)"
    )
    video_init_flow_warp: bool = setting(
        True,
        "Video Input: every frame after the first starts from the previous frame made, carried along the video's "
        "motion (RAFT optical flow from the video frame to the one before) and blended with its own video frame by "
        "video_init_flow_blend; off: every frame starts from its video frame alone",
    )
    video_init_flow_blend: float = setting(
        0.999,
        "Video Input with video_init_flow_warp: the warped previous frame's share of a frame's start "
        "(0: the video frame alone, 1: the warped previous frame alone)",
        low=0.0,
        high=1.0,
    )
    video_init_check_consistency: bool = setting(
        False,
        "Video Input: trust the optical flow only where it passes the forward-backward check (a second RAFT flow "
        "per frame); where it fails (occluded, uncovered or leaving the frame) the video frame is used alone",
    )
    video_init_blend_mode: str = setting(
        "optical flow",
        "Video Input: how each frame written (and the MP4) is smoothed with the frame made before it, half and half",
        choices=VIDEO_BLEND_MODES,
        choice_meanings={
            "None": "the frames as made",
            "linear": "each frame blended with the previous frame made",
            "optical flow": "each frame blended with the previous frame made, carried along the video's motion",
        },
    )
    # The notebook's video_init_* settings: in Video Input mode each one given replaces its setting.
    video_init_steps: int | None = setting(
        None, "Video Input: steps in its place", low=1, high=MAX_STEPS, shown="as steps"
    )
    video_init_clip_guidance_scale: float | str | None = setting(
        None, "Video Input: clip_guidance_scale in its place", allowed=SCALE_ALLOWED, shown="as clip_guidance_scale"
    )
    video_init_tv_scale: float | str | None = setting(
        None, "Video Input: tv_scale in its place", allowed=SCALE_ALLOWED, shown="as tv_scale"
    )
    video_init_range_scale: float | str | None = setting(
        None, "Video Input: range_scale in its place", allowed=SCALE_ALLOWED, shown="as range_scale"
    )
    video_init_sat_scale: float | str | None = setting(
        None, "Video Input: sat_scale in its place", allowed=SCALE_ALLOWED, shown="as sat_scale"
    )
    video_init_cutn_batches: int | str | None = setting(
        None,
        "Video Input: cutn_batches in its place",
        low=1,
        high=64,
        allowed=f"a whole number 1 to 64, or such numbers as {SCHEDULE}",
        shown="as cutn_batches",
    )
    video_init_skip_steps: int | None = setting(
        None,
        "Video Input: skip_steps in its place (skipped by the first frame when video_init_flow_warp is on)",
        low=0,
        allowed="0 to the steps - 1",
        shown="as skip_steps",
    )
    video_init_frames_scale: float | None = setting(
        None, "Video Input: frames_scale in its place", low=0.0, shown="as frames_scale"
    )
    video_init_frames_skip_steps: str | None = setting(
        None, "Video Input: frames_skip_steps in its place", allowed=PERCENTAGE_ALLOWED, shown="as frames_skip_steps"
    )
    fps: float = setting(12, "2D: frames per second of the MP4 (Video Input keeps the video's pace)", low=1, high=120)
    resume_run: bool = setting(
        False, "continue an animation from its frames in output_dir (same batch_name; seed, or its latest run)"
    )
    resume_from_frame: int | None = setting(
        None, "with resume_run: keep frames up to this one and make the rest", low=0, shown="after the last frame"
    )

    def schedule(self, name: str) -> list[float]:
        """A number-or-schedule setting's value at each of the 1000 virtual steps (a number: all alike).

        Raises ``SettingsError`` naming the setting when its value cannot be read as a schedule."""
        return parse_schedule(name, getattr(self, name))

    @property
    def width(self) -> int:
        """The image's width in pixels."""
        return self.width_height[0]

    @property
    def height(self) -> int:
        """The image's height in pixels."""
        return self.width_height[1]

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (a deep copy: changing it leaves these settings as they are)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """These settings as YAML text (also written to ``path`` when given); image bytes are left out."""
        return write_yaml(self.to_dict(), path)


SETTING_NAMES = tuple(f.name for f in fields(Settings))
# The notebook's video_init_* overrides, each with the setting it replaces in Video Input mode
VIDEO_INIT_OVERRIDES = {
    f"video_init_{name}": name
    for name in (
        "steps", "clip_guidance_scale", "tv_scale", "range_scale", "sat_scale", "cutn_batches", "skip_steps",
        "frames_scale", "frames_skip_steps",
    )
}  # fmt: skip
# The notebook's "Animation Settings": a form shows them together ("motion" in settings_schema)
MOTION_SETTINGS = (
    "animation_mode", "max_frames", "angle", "zoom", "translation_x", "translation_y", "translation_z",
    "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "key_frames", "midas_depth_model", "midas_weight",
    "near_plane", "far_plane", "fov", "padding_mode", "sampling_mode", "turbo_mode", "turbo_steps", "turbo_preroll",
    "vr_mode", "vr_eye_angle", "vr_ipd", "frames_scale", "frames_skip_steps", "video_init_path", "extract_nth_frame",
    "video_init_seed_continuity", "video_init_flow_warp", "video_init_flow_blend", "video_init_check_consistency",
    "video_init_blend_mode", *VIDEO_INIT_OVERRIDES, "fps", "resume_run", "resume_from_frame",
)  # fmt: skip


def with_video_init_overrides(settings: Settings) -> Settings:
    """The settings a Video Input animation runs with: each ``video_init_*`` override that is given
    (not None) in place of the setting it replaces (``VIDEO_INIT_OVERRIDES``), as the notebook's
    "Do the Run" cell puts them in place; the overrides stay as they are. Any other
    ``animation_mode``: ``settings`` unchanged."""
    if settings.animation_mode != "Video Input":
        return settings
    given = {name: getattr(settings, o) for o, name in VIDEO_INIT_OVERRIDES.items() if getattr(settings, o) is not None}
    return dataclasses.replace(settings, **given) if given else settings


FIELD_META = {f.name: f.metadata for f in fields(Settings)}  # each setting's meaning and limits (see setting())


def limits_of(name: str) -> tuple[Any, Any]:
    """The (low, high) bounds of a numeric setting, as the validator enforces them (None: open)."""
    return FIELD_META[name]["low"], FIELD_META[name]["high"]


def choices(name: str) -> tuple[str, ...]:
    """The values a setting offers (None: it offers no list of choices)."""
    return FIELD_META[name]["choices"]


def choice_meanings(name: str) -> dict[str, str]:
    """What each of a setting's choices is for, in one line each (empty: the setting has none)."""
    return dict(FIELD_META[name]["choice_meanings"] or {})


# ----- each setting's type, read from the fields (the one source for the wire, the CLI and the page) -----

KINDS = (
    "bool",
    "int",
    "float",
    "number_or_schedule",
    "int_or_schedule",
    "text",
    "optional_text",
    "texts",
    "numbers",
    "size",
    "image",
    "video",
    "bool_or_schedule",
    "model_schedules",
    "images",
    "steps",
)
KEYFRAME_SETTINGS = ("angle", "zoom", "translation_x", "translation_y")  # 2D's motion, in Motion's order
# 3D's camera move, in disco.warp3d.camera_motion's order
KEYFRAME_3D_SETTINGS = (
    "translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z",
)  # fmt: skip


@cache
def kind(name: str) -> str:
    """The kind of value a setting holds, from its field's type: one of ``KINDS``.

    ``int``: whole numbers (also when a transport turned them into floats), ``float``: any number,
    ``number_or_schedule``: a number or a schedule text, ``int_or_schedule``: a whole number or a
    schedule text of whole numbers, ``texts``: a list of texts (``text_prompts`` also a mapping of
    frame numbers to such lists), ``numbers``: a list of numbers, ``size``: two whole numbers,
    ``image``: a path, URL or bytes (``init_image``), ``video``: a video file's path or bytes
    (``video_init_path``, marked so in its ``Annotated`` type), ``bool_or_schedule``: true/false or
    a schedule text of them, ``model_schedules``: CLIP model names to such schedules
    (``clip_models_schedules``), ``images``: a list of images' paths, bytes or data URIs, each with an
    optional weight (``image_prompts``), ``steps``: a count or a list of
    step numbers (``intermediate_saves``, marked so too).
    """
    hint = typing.get_type_hints(Settings, include_extras=True)[name]
    if typing.get_origin(hint) is Annotated:
        return hint.__metadata__[0]
    args = set(typing.get_args(hint)) - {type(None)}
    if args and all(typing.get_origin(a) in (list, dict) for a in args):
        return "texts"  # a list of texts, or frame numbers to lists of texts
    optional = type(None) in typing.get_args(hint)
    if hint is bool:
        return "bool"
    if hint is int or (optional and args == {int}):
        return "int"
    if hint is float or (optional and args == {float}):
        return "float"
    if args == {bool, str}:
        return "bool_or_schedule"
    if args == {float, str}:
        return "number_or_schedule"
    if args == {int, str}:
        return "int_or_schedule"
    if hint is str:
        return "text"
    if optional and args == {str}:
        return "optional_text"
    lists = {(int,): "size", (float,): "numbers", (str,): "texts"}
    if typing.get_origin(hint) is list and typing.get_args(hint) in lists:
        return lists[typing.get_args(hint)]
    if bytes in args:
        return "image"
    raise TypeError(f"Settings.{name}: no kind for {hint}")  # a new field type needs a kind here


def default(name: str) -> Any:
    """A setting's default value (a fresh copy for lists)."""
    spec = Settings.__dataclass_fields__[name]
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


SEED_API_NAMES = SETTING_NAMES[: SETTING_NAMES.index("output_dir") + 1]  # the seed API's parameters, in order
