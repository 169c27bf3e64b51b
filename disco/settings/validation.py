"""``validate_settings``: every setting read into its type (``coercion``), then the rules between
settings, written here by hand. It runs at the two trust boundaries (the client API, and the
server's first executor) before any model loads; its error names the parameter, the bad value and
what is allowed. Limits a server sets (``Limits``) come in as an argument: nothing here reads the
environment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cut_presets import cut_schedules
from ..errors import DEFAULT_LIMITS, Limits, SettingsError
from ..keyframes import keyframe_series
from ..models import DIFFUSION_MODELS as MODELS
from ..tiling import gobig_steps
from .coercion import PERCENTAGE, coerce_settings
from .fields import (
    KEYFRAME_3D_SETTINGS,
    KEYFRAME_SETTINGS,
    SETTING_NAMES,
    Settings,
    default,
    with_video_init_overrides,
)
from .notebook_names import unknown_settings_error
from .prompt_text import check_prompts, parse_image_prompt
from .scalars import read_int
from .schedules import bool_schedule, count_schedule
from .yaml_io import read_yaml


def validate_settings(
    values: Mapping[str, Any] | Settings | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    tokens: bool = True,
    **overrides: Any,
) -> Settings:
    """Check and normalise every setting; raise ``SettingsError`` naming the first bad one.

    Returns new ``Settings``: ``values`` (a mapping or ``Settings``) is never changed, and
    validating its result again gives equal settings. ``limits``: the cost caps of the server that
    will run it. The prompts are parsed and checked in full (weights, their sum and, with
    ``tokens``, CLIP's 77-token limit, which needs open_clip's tokenizer and so torch), so a bad
    prompt fails here, before any model loads.
    """
    if isinstance(values, Settings):
        values = values.to_dict()
    if values is not None and not isinstance(values, Mapping):
        raise SettingsError("settings", f"must be a mapping of setting names to values, got {type(values).__name__}")
    data = {**(values or {}), **overrides}
    unknown = [k for k in data if k not in SETTING_NAMES]
    if unknown:  # every one at once, the notebook's names with what to use instead
        raise unknown_settings_error(unknown, data)
    s = Settings(**coerce_settings(data, limits))  # every value checked on its own
    # the cut settings not given: from cut_schedules_group (auto: the model's own, as the notebook switches)
    s = dataclasses.replace(s, **cut_schedules(vars(s)))

    _check_batch(s)
    if s.skip_steps >= s.steps:
        raise SettingsError("skip_steps", f"must be smaller than steps ({s.steps}), got {s.skip_steps}")
    clamped = bool_schedule("clamp_grad", s.clamp_grad)
    if any(on and m <= 0 for on, m in zip(clamped, s.schedule("clamp_max"), strict=True)):
        at = "at every step " if isinstance(s.clamp_max, str) or isinstance(s.clamp_grad, str) else ""
        raise SettingsError("clamp_max", f"must be > 0 {at}when clamp_grad is on, got {s.clamp_max!r}")
    for model in s.clip_models_schedules or {}:
        if model not in s.clip_models:
            raise SettingsError(
                "clip_models_schedules",
                f"{model!r} is not one of clip_models ({', '.join(s.clip_models)}); schedule only the models chosen",
            )
    overview, inner = count_schedule("cut_overview", s.cut_overview), count_schedule("cut_innercut", s.cut_innercut)
    if any(o + i == 0 for o, i in zip(overview, inner, strict=True)):
        raise SettingsError("cut_innercut", "cut_overview + cut_innercut must be at least 1 at every step")
    _check_model_needs(s)
    moved = {"2D": KEYFRAME_SETTINGS, "3D": KEYFRAME_3D_SETTINGS}.get(s.animation_mode, ())
    for name in moved:
        keyframe_series(name, getattr(s, name), s.max_frames)  # every frame's value: a bad one fails now
    if s.turbo_mode and s.animation_mode != "3D":
        raise SettingsError(
            "turbo_mode",
            f"works with animation_mode '3D' only (its frames between come from the depth warp), "
            f"got animation_mode {s.animation_mode!r}",
        )
    if s.vr_mode and s.animation_mode != "3D":
        raise SettingsError(
            "vr_mode",
            f"works with animation_mode '3D' only (each eye's view is the frame moved through its depth map), "
            f"got animation_mode {s.animation_mode!r}",
        )
    if s.far_plane <= s.near_plane:  # named after the one moved off its default (far_plane if both were)
        if s.far_plane == default("far_plane"):
            raise SettingsError("near_plane", f"must be smaller than far_plane ({s.far_plane}), got {s.near_plane}")
        raise SettingsError("far_plane", f"must be larger than near_plane ({s.near_plane}), got {s.far_plane}")
    frames_skip_steps(s)
    _check_gobig(s)
    if s.animation_mode == "Video Input":
        _check_video_init(s)
    if s.resume_from_frame is not None:
        read_int("resume_from_frame", s.resume_from_frame, 0, s.max_frames - 1)
    _check_cost(with_video_init_overrides(s), limits)
    _check_prompts(s, tokens)
    if s.animation_mode != "None":
        s = dataclasses.replace(s, n_batches=1)  # one animation per run, as in the notebook
    return s


def check_prompt_tokens(s: Settings) -> None:
    """CLIP's 77-token limit for every prompt of settings validated with ``tokens=False``, for each
    model of ``clip_models`` (open_clip's tokenizer takes seconds to import, so a caller may check
    its files first); raises ``SettingsError`` naming ``text_prompts``."""
    _check_prompts(s, tokens=True)


def _check_prompts(s: Settings, tokens: bool) -> None:
    check_prompts(
        s.text_prompts,
        s.style,
        s.artist,
        tokens=tokens,
        clip_models=s.clip_models,
        clip_models_schedules=model_schedules(s),
        truncate=s.truncate_overlength_prompt,
        image_weights=[parse_image_prompt(p).weight for p in s.image_prompts],
    )


def settings_from_yaml(text_or_path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> Settings:
    """Validated settings from YAML text or the ``.yml``/``.yaml`` file it names (see ``read_yaml``)."""
    return validate_settings(read_yaml(text_or_path), limits=limits)


def uses_secondary_model(s: Settings) -> bool:
    """Whether the secondary model makes the denoised estimate at any step (``use_secondary_model``,
    a schedule included): the run needs it loaded."""
    return any(bool_schedule("use_secondary_model", s.use_secondary_model))


def model_schedules(s: Settings) -> dict[str, list[bool]]:
    """Each CLIP model of ``clip_models`` on or off at each of the 1000 virtual steps
    (``clip_models_schedules``; a model it does not name is on at every step)."""
    given = s.clip_models_schedules or {}
    return {m: bool_schedule("clip_models_schedules", given[m]) if m in given else [True] * 1000 for m in s.clip_models}


def frames_skip_steps(s: Settings) -> int:
    """The steps skipped for every animation frame after the first: ``floor(steps * percentage / 100)``,
    as the notebook computes them from ``frames_skip_steps`` (e.g. ``"60%"``)."""
    match = PERCENTAGE.fullmatch(s.frames_skip_steps) if isinstance(s.frames_skip_steps, str) else None
    if not match:
        raise SettingsError(
            "frames_skip_steps", f"must be a percentage from 0% to 99% such as '60%', got {s.frames_skip_steps!r}"
        )
    skipped = math.floor(s.steps * float(match.group(1)) / 100)
    if skipped >= s.steps:
        raise SettingsError(
            "frames_skip_steps", f"{s.frames_skip_steps} of {s.steps} steps skips them all: lower it or raise steps"
        )
    return skipped


def _check_video_init(s: Settings) -> None:
    """Video Input's rules on the settings it runs with (``with_video_init_overrides``): a flow-warped
    first frame skips ``skip_steps`` (fewer than the steps), every other frame ``frames_skip_steps``
    (at least one step left). The error names the override when one is given."""
    run = with_video_init_overrides(s)

    def name(setting: str) -> str:
        override = f"video_init_{setting}"
        return override if getattr(s, override) is not None else setting

    if s.video_init_flow_warp and run.skip_steps >= run.steps:
        bad = name("skip_steps") if s.video_init_skip_steps is not None or s.video_init_steps is None else name("steps")
        raise SettingsError(
            bad,
            f"the first video frame skips {name('skip_steps')} {run.skip_steps} of {name('steps')} {run.steps}: "
            "it must skip fewer steps than there are",
        )
    try:
        frames_skip_steps(run)
    except SettingsError:
        raise SettingsError(
            name("frames_skip_steps"),
            f"{run.frames_skip_steps} of {name('steps')} {run.steps} skips them all: lower it or raise {name('steps')}",
        ) from None


def _check_batch(s: Settings) -> None:
    """``batch_size`` above 1 only where a batch means something: a still image. An animation's frames
    each start from the one before (the notebook runs animations with n_batches 1 and one image per
    frame), and GoBig enlarges and re-diffuses one picture tile by tile."""
    if s.batch_size == 1:
        return
    if s.animation_mode != "None":
        raise SettingsError(
            "batch_size",
            f"must be 1 for an animation (each frame grows from the one frame before it), got {s.batch_size} "
            f"with animation_mode {s.animation_mode!r}; for several animations, run them one after another",
        )
    if s.gobig:
        raise SettingsError(
            "batch_size",
            f"must be 1 with gobig (GoBig enlarges one picture tile by tile), got {s.batch_size}; "
            "use n_batches for several enlarged images",
        )


def _check_gobig(s: Settings) -> None:
    """GoBig's rules: still images only; tiles that advance (an overlap under half the smaller side);
    ``gobig_from_init`` with ``gobig`` and an ``init_image`` to enlarge."""
    if s.gobig and s.animation_mode != "None":
        raise SettingsError(
            "gobig", f"works on still images only (animation_mode 'None'), got animation_mode {s.animation_mode!r}"
        )
    if s.gobig and 2 * s.gobig_overlap >= min(s.width, s.height):
        raise SettingsError(
            "gobig_overlap",
            f"must be less than half the smaller side of width_height {s.width}x{s.height} "
            f"(below {(min(s.width, s.height) + 1) // 2}), got {s.gobig_overlap}",
        )
    if s.gobig_from_init and not s.gobig:
        raise SettingsError("gobig_from_init", "needs gobig true (it says what GoBig enlarges)")


def check_gobig_start(s: Settings, has_init_image: bool) -> None:
    """``gobig_from_init`` needs the picture to enlarge: checked where the init image's bytes are
    known (the client after reading its file, the server from its request), not in
    ``validate_settings``, which sees a path at most. Raises ``SettingsError`` naming ``gobig_from_init``."""
    if s.gobig_from_init and not has_init_image:
        raise SettingsError("gobig_from_init", "needs an init_image: the picture to enlarge")


def _check_model_needs(s: Settings) -> None:
    """Refuse settings the chosen model cannot work with (its ``needs``), naming the setting."""
    model = MODELS.get(s.diffusion_model)
    for need in model.needs if model else ():
        value = getattr(s, need.setting)
        if value not in need.allowed:
            allowed = " or ".join(repr(a) for a in need.allowed)
            raise SettingsError(
                need.setting,
                f"diffusion_model {model.name} needs {need.setting} {allowed} ({need.why}), got {value!r}",
            )


def _check_cost(s: Settings, limits: Limits) -> None:
    """Refuse a request above the server's caps: the batch's pixels (width x height x batch_size, against
    ``max_pixels``) and its pixel-steps (those pixels x sampled steps, against ``max_pixel_steps``)."""
    cap = limits.max_pixel_steps
    pixels = s.width * s.height
    if s.batch_size > 1 and pixels * s.batch_size > limits.max_pixels:
        raise SettingsError(
            "batch_size",
            f"{s.batch_size} images of {s.width}x{s.height} are {pixels * s.batch_size} pixels in one sampler call, "
            f"above this server's cap of {limits.max_pixels} (DISCO_MAX_PIXELS): lower batch_size or width_height, "
            "or raise n_batches instead (one call per batch)",
        )
    first = 0 if s.gobig_from_init else s.steps - s.skip_steps
    tiles = 0
    if s.gobig:
        tiles = gobig_steps(s.width, s.height, s.steps, s.gobig_scale, s.gobig_skip_ratio, s.gobig_overlap)
    cost = pixels * s.batch_size * (first + tiles)
    if cap is not None and s.batch_size > 1 and cost > cap:
        raise SettingsError(
            "batch_size",
            f"{s.batch_size} images of {s.width}x{s.height} pixels x {first} steps (steps - skip_steps) is {cost} "
            f"pixel-steps, above this server's cap of {cap} (DISCO_MAX_PIXEL_STEPS): lower batch_size (n_batches "
            "makes one call per batch), width_height or steps",
        )
    if cap is not None and tiles and cost > cap:
        raise SettingsError(
            "gobig_scale",
            f"{s.width}x{s.height} pixels x {first + tiles} steps (the image's {first} and GoBig's tiles' {tiles}) "
            f"is {cost} pixel-steps, above this server's cap of {cap} (DISCO_MAX_PIXEL_STEPS): "
            "lower gobig_scale, raise gobig_skip_ratio or lower width_height or steps",
        )
    if cap is not None and cost > cap:
        raise SettingsError(
            "steps",
            f"{s.width}x{s.height} pixels x {s.steps - s.skip_steps} steps (steps - skip_steps) is {cost} "
            f"pixel-steps, above this server's cap of {cap} (DISCO_MAX_PIXEL_STEPS): "
            "lower width_height or steps, or raise skip_steps",
        )
