"""Every generation setting: its default, type, range and validation, in one place.

The seed API's parameters keep the PaddleHub module's names and defaults; the Disco Diffusion
extras are keyword-only there and carry the module's defaults. The ``Settings`` fields are the
one source of each setting's default and type: the client's signature and command line, the wire
protocol's number restoring and the web page's form (``settings_schema``) are read from them.
``validate_settings`` runs at the two trust boundaries (the client API, and the server's first
executor) before any model loads; its error names the parameter, the bad value and what is
allowed. Limits a server sets (``Limits``) come in as an argument: this module reads no
environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml

from .clip_catalog import CLIP_MODELS, CLIP_SPECS, DEFAULT_CLIP_MODEL
from .models import CHECKPOINT_SUFFIXES, DEFAULT_MODEL, is_checkpoint_path
from .models import DIFFUSION_MODELS as MODELS

LIGHTHOUSE = (
    "A beautiful painting of a singular lighthouse, shining its light across a tumultuous sea of blood "
    "by greg rutkowski and thomas kinkade, Trending on artstation."
)
DIFFUSION_MODELS = tuple(MODELS)  # the registry's models (disco/models.py), the default first
CHECKPOINT_ALLOWED = (
    "the path of your own checkpoint (.pt) of one of their UNet layouts: inside the server's model directory, "
    "or anywhere on this machine for the Flow the client starts itself"
)
PERLIN_MODES = ("mixed", "colored", "gray")
PERLIN_ALIASES = {"mix": "mixed", "color": "colored", "grey": "gray"}
SAMPLING_MODES = ("ddim", "plms")
ANIMATION_MODES = ("None", "2D", "Video Input")  # the notebook's "3D" needs depth models not offered here
MAX_FRAMES = 10000  # frame numbers in file names have four digits
SCHEDULE_LENGTH = 1000  # schedules are read over 1000 "virtual" steps
MAX_STEPS = 1000
MAX_BATCHES = 1000


@dataclass(frozen=True)
class Limits:
    """What one image may cost: ``max_pixels`` (width x height) and ``max_pixel_steps``
    (width x height x sampled steps, None: no cap). A server sets its own (``DISCO_MAX_PIXELS``,
    ``DISCO_MAX_PIXEL_STEPS``, read by ``disco_service.config``)."""

    max_pixels: int = 2048 * 2048
    max_pixel_steps: int | None = None


DEFAULT_LIMITS = Limits()


class SettingsError(ValueError):
    """A setting is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


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


SCHEDULE = "a schedule over 1000 steps such as [12]*400+[4]*600"
SCALE_ALLOWED = "a number, or numbers as a schedule over 1000 steps such as [5000]*500+[2000]*500"
MAX_TRANSFORMATIONS = 100
KEYFRAMES = (
    "key frames 'frame: (value), ...' (e.g. '0: (1), 10: (1.05)'), linear in between; a value may use t, the "
    "frame number: numbers, t, pi, e, + - * / % **, parentheses and sin cos tan asin acos atan sinh cosh tanh "
    "exp log log10 sqrt abs floor ceil min max"
)
# A file name may have 255 bytes; the longest one around a batch name takes 55 more of them:
# reverse_diffusion-{batch_name}-{seed}-run{N}_{i}-step{NNNN}.png
BATCH_NAME_BYTES = 200
BATCH_NAME_ALLOWED = (
    f"up to 100 characters and {BATCH_NAME_BYTES} bytes of UTF-8: letters and digits of any script (with their "
    "accents), spaces and _ . ( ) -, not starting with '.' and not a Windows device name (CON, PRN, AUX, NUL, "
    "COM1-9, LPT1-9)"
)


@dataclass
class Settings:
    # The seed API (PaddleHub disco_diffusion_clip_rn50), in its order.
    text_prompts: list[str] | dict[int, list[str]] = setting(
        meaning="what to paint; 'text:weight' per prompt (weights may be negative, must not sum to 0); for an "
        "animation also {frame: [prompts], ...}: the latest key at or before a frame applies",
        factory=lambda: [LIGHTHOUSE, "yellow color scheme"],
        allowed="one or more prompts of at most 77 CLIP tokens, or a JSON object of frame numbers to such lists",
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
    cutn_batches: int | str = setting(
        4,
        "batches of cutouts CLIP judges at each step; a step's time grows with it",
        low=1,
        high=64,
        allowed=f"a whole number 1 to 64, or such numbers as {SCHEDULE}",
    )
    diffusion_sampling_mode: str = setting("ddim", "the sampler", choices=SAMPLING_MODES)
    eta: float = setting(0.8, "DDIM's noise: 0 is deterministic, 1 adds the most", low=0.0, high=1.0)
    clamp_grad: bool = setting(True, "clamp the guidance gradient to clamp_max")
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
    cut_overview: str = setting(
        "[12]*400+[4]*600", "whole-image cutouts per batch, by step", allowed=f"cutout counts as {SCHEDULE}"
    )
    cut_innercut: str = setting(
        "[4]*400+[12]*600", "zoomed-in cutouts per batch, by step", allowed=f"cutout counts as {SCHEDULE}"
    )
    cut_ic_pow: float | str = setting(
        1, "how small the zoomed-in cutouts get (larger: smaller)", allowed=f"a number > 0, or {SCHEDULE}"
    )
    cut_icgray_p: str = setting(
        "[0.2]*400+[0]*600", "the chance that a cutout is grey, by step", allowed=f"probabilities 0 to 1 as {SCHEDULE}"
    )
    batch_size: int = setting(1, "images per sampler call", low=1, high=1)
    diffusion_model: str = setting(
        DEFAULT_MODEL,
        "the diffusion model: what kind of picture it paints",
        choices=DIFFUSION_MODELS,
        choice_meanings={name: model.description for name, model in MODELS.items()},
        allowed=CHECKPOINT_ALLOWED,
    )
    use_secondary_model: bool = setting(
        True, "let the small secondary model make the denoised estimate CLIP sees (faster, less memory)"
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
        "Video Input: each frame starts from a frame of video_init_path",
        choices=ANIMATION_MODES,
    )
    max_frames: int = setting(
        MAX_FRAMES, "frames of an animation (Video Input: at most this many of the video's)", low=1, high=MAX_FRAMES
    )
    angle: str = setting("0:(0)", "2D: rotation per frame in degrees, counter-clockwise", allowed=KEYFRAMES)
    zoom: str = setting("0: (1), 10: (1.05)", "2D: scale per frame (1: none, above 1 zooms in)", allowed=KEYFRAMES)
    translation_x: str = setting("0: (0)", "2D: pixels per frame to the right", allowed=KEYFRAMES)
    translation_y: str = setting("0: (0)", "2D: pixels per frame downwards", allowed=KEYFRAMES)
    frames_scale: float = setting(
        1500, "animation: how strongly each frame stays like the one it starts from (LPIPS loss)", low=0.0
    )
    frames_skip_steps: str = setting(
        "60%",
        "animation: share of the steps skipped for every frame after the first (Video Input: every frame); "
        "more flickers less but adds less new detail",
        allowed="a percentage from 0% to 99% that leaves at least one step",
    )
    video_init_path: Annotated[str | bytes | None, "video"] = setting(
        None, "Video Input: the video (the client reads the file and sends its bytes)", allowed="a video file"
    )
    extract_nth_frame: int = setting(2, "Video Input: use every nth frame of the video", low=1)
    video_init_seed_continuity: bool = setting(
        False, "Video Input: every frame uses the same seed (otherwise frame n uses seed + n)"
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
        return self.width_height[0]

    @property
    def height(self) -> int:
        return self.width_height[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        data = self.to_dict()
        if isinstance(data["init_image"], bytes):
            data["init_image"] = None  # image bytes do not belong in a settings file
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> Settings:
        path = Path(text_or_path)
        text = path.read_text() if isinstance(text_or_path, Path) or _looks_like_file(text_or_path) else text_or_path
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise SettingsError("settings", f"a YAML mapping of setting names to values is required, got {data!r}")
        return validate_settings(data)


def _looks_like_file(text: str | Path) -> bool:
    return "\n" not in str(text) and str(text).endswith((".yml", ".yaml")) and Path(text).is_file()


SETTING_NAMES = tuple(f.name for f in fields(Settings))
# The notebook's "Animation Settings": a form shows them together ("motion" in settings_schema)
MOTION_SETTINGS = (
    "animation_mode", "max_frames", "angle", "zoom", "translation_x", "translation_y", "frames_scale",
    "frames_skip_steps", "video_init_path", "extract_nth_frame", "video_init_seed_continuity", "fps", "resume_run",
    "resume_from_frame",
)  # fmt: skip
_META = {f.name: f.metadata for f in fields(Settings)}


def limits_of(name: str) -> tuple[Any, Any]:
    """The (low, high) bounds of a numeric setting, as the validator enforces them (None: open)."""
    return _META[name]["low"], _META[name]["high"]


def choices(name: str) -> tuple[str, ...]:
    return _META[name]["choices"]


def choice_meanings(name: str) -> dict[str, str]:
    """What each of a setting's choices is for, in one line each (empty: the setting has none)."""
    return dict(_META[name]["choice_meanings"] or {})


def describe(name: str) -> tuple[str, str, str]:
    """A setting's meaning, what is allowed and its default, in words (for ``--help``)."""
    meta, default = _META[name], Settings.__dataclass_fields__[name]
    value = default.default_factory() if default.default_factory is not dataclasses.MISSING else default.default
    if meta["shown"]:
        shown = meta["shown"]
    elif isinstance(value, bool):
        shown = str(value).lower()
    else:
        shown = "none" if value is None else "''" if value == "" else str(value)
    low, high = meta["low"], meta["high"]
    if meta["choices"]:
        meanings = meta["choice_meanings"] or {}
        listed = [f"{c} ({meanings[c]})" if c in meanings else c for c in meta["choices"]]
        several = isinstance(value, list)  # a list setting's choices are its elements'
        allowed = ("one or more of " if several else "one of ") + ("; " if meanings else ", ").join(listed)
        if meta["allowed"]:
            allowed += f"; or {meta['allowed']}"
    elif meta["allowed"]:
        allowed = meta["allowed"]
    elif isinstance(value, bool):
        allowed = "true or false"
    elif low is not None and high is not None:
        allowed = f"{low} to {high}" if low != high else f"only {low}"
    elif low is not None:
        allowed = f"at least {low}"
    elif isinstance(value, int | float):
        allowed = "any number"
    else:
        allowed = "text"
    return meta["meaning"], allowed, shown


# ----- type coercion: strict, but tolerant of floats that carry whole numbers (gRPC tags) -----


def _int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(name, f"must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise SettingsError(name, f"must be an integer, got {value!r}")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(name, f"must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return value


def _float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(name, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SettingsError(name, f"must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(name, f"must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return value


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):  # gRPC Struct turns bools into numbers
        return bool(value)
    raise SettingsError(name, f"must be true or false, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str:
    if isinstance(value, str):
        value = (aliases or {}).get(value.lower(), value.lower())
        if value in allowed:
            return value
    raise SettingsError(name, f"must be one of {list(allowed)}, got {value!r}")


def _optional_text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise SettingsError(name, f"must be text or None, got {value!r}")


# ----- schedules: "[12]*400+[4]*600", parsed without eval -----

_TERM = re.compile(r"\s*\[([^\[\]]*)\]\s*(?:\*\s*(\d+))?\s*")


def parse_schedule(name: str, value: Any, length: int = SCHEDULE_LENGTH) -> list[float]:
    """A per-virtual-step schedule: a number (constant), a list, or ``[a, b]*n + [c]*m`` text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [_float(name, value)] * length
    if isinstance(value, list | tuple):
        values = [_float(name, v) for v in value]
    elif isinstance(value, str):
        values = []
        for term in value.split("+"):
            match = _TERM.fullmatch(term)
            if not match:
                raise SettingsError(
                    name, f"cannot parse {term.strip()!r} in {value!r}; write terms like [12]*400+[4]*600"
                )
            items = [s.strip() for s in match.group(1).split(",") if s.strip()]
            try:
                numbers = [float(s) for s in items]
            except ValueError:
                raise SettingsError(name, f"schedule values must be numbers, got [{match.group(1)}]") from None
            repeat = int(match.group(2) or 1)
            if len(numbers) * repeat > length:
                raise SettingsError(name, f"{value!r} is longer than {length} steps")
            values.extend(numbers * repeat)
    else:
        raise SettingsError(name, f"must be a schedule like '[12]*400+[4]*600' or a number, got {value!r}")
    if len(values) != length:
        raise SettingsError(name, f"must cover exactly {length} steps, {value!r} covers {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise SettingsError(name, "schedule values must be finite")
    return values


def _number_or_schedule(
    name: str, value: Any, low: float | None = None, high: float | None = None, whole: bool = False
) -> float | int | str:
    """A number (returned as ``_float``/``_int`` return it, so a number behaves as before), or a
    schedule text whose every value passes the same checks (returned as written)."""
    check = _int if whole else _float
    if not isinstance(value, str) or not value.lstrip().startswith("["):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(name, f"must be a number or a schedule such as [5000]*500+[2000]*500, got {value!r}")
        return check(name, value, low, high)
    for v in sorted(set(parse_schedule(name, value))):
        try:
            check(name, v, low, high)
        except SettingsError as exc:
            problem = str(exc).removeprefix(f"{name}: ")
            raise SettingsError(name, f"every value of the schedule {value!r} {problem}") from None
    return value


def _fractions(name: str, value: Any) -> list[float]:
    """Fractions of the run: a list of 1 to ``MAX_TRANSFORMATIONS`` numbers in (0, 1); one number
    stands for a list of one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    allowed = f"1 to {MAX_TRANSFORMATIONS} fractions of the run, each between 0 and 1 (both excluded), e.g. [0.09]"
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_TRANSFORMATIONS:
        raise SettingsError(name, f"must be {allowed}, got {value!r}")
    fractions = [_float(name, v) for v in value]
    if (bad := next((f for f in fractions if not 0 < f < 1), None)) is not None:
        raise SettingsError(name, f"must be {allowed}, got {bad}")
    return fractions


def count_schedule(name: str, value: Any) -> list[int]:
    values = parse_schedule(name, value)
    if any(v < 0 or not v.is_integer() for v in values):
        raise SettingsError(name, f"cutout counts must be whole numbers >= 0, got {value!r}")
    return [int(v) for v in values]


# ----- the validator -----


def validate_settings(
    values: Mapping[str, Any] | Settings | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    tokens: bool = True,
    **overrides: Any,
) -> Settings:
    """Check and normalise every setting; raise ``SettingsError`` naming the first bad one.

    ``limits``: the cost caps of the server that will run it. The prompts are parsed and checked
    in full (weights, their sum and, with ``tokens``, CLIP's 77-token limit, which needs open_clip's
    tokenizer and so torch), so a bad prompt fails here, before any model loads.
    """
    if isinstance(values, Settings):
        values = values.to_dict()
    if values is not None and not isinstance(values, Mapping):
        raise SettingsError("settings", f"must be a mapping of setting names to values, got {type(values).__name__}")
    data = {**(values or {}), **overrides}
    unknown = [k for k in data if k not in SETTING_NAMES]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SETTING_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        name = str(unknown[0]) if str(unknown[0]).isidentifier() else repr(unknown[0])
        raise SettingsError(name, f"unknown setting{hint} Known settings: {', '.join(SETTING_NAMES)}")
    s = Settings(**data)

    s.text_prompts = _text_prompts(s.text_prompts)
    if s.init_image is not None and not isinstance(s.init_image, str | bytes):
        raise SettingsError(
            "init_image", f"must be a file path, a URL or image bytes, got {type(s.init_image).__name__}"
        )
    if s.init_image == "":
        s.init_image = None
    s.width_height = _width_height(s.width_height, limits)
    s.steps = _int("steps", s.steps, *limits_of("steps"))
    s.skip_steps = _int("skip_steps", s.skip_steps, *limits_of("skip_steps"))
    if s.skip_steps >= s.steps:
        raise SettingsError("skip_steps", f"must be smaller than steps ({s.steps}), got {s.skip_steps}")
    for name in ("init_scale", "clip_guidance_scale", "tv_scale", "range_scale", "sat_scale"):
        setattr(s, name, _number_or_schedule(name, getattr(s, name)))
    s.perlin_init = _bool("perlin_init", s.perlin_init)
    s.perlin_mode = _choice("perlin_mode", s.perlin_mode, choices("perlin_mode"), PERLIN_ALIASES)
    if s.seed is not None:
        s.seed = _int("seed", s.seed, *limits_of("seed"))
    s.display_rate = _int("display_rate", s.display_rate, *limits_of("display_rate"))
    s.n_batches = _int("n_batches", s.n_batches, *limits_of("n_batches"))
    s.batch_name = _batch_name(s.batch_name)
    s.use_gpu = _bool("use_gpu", s.use_gpu)
    if not isinstance(s.output_dir, str | os.PathLike) or not str(s.output_dir).strip():
        raise SettingsError("output_dir", f"must be a directory path, got {s.output_dir!r}")
    s.output_dir = str(s.output_dir)

    s.style = _optional_text("style", s.style)
    s.artist = _optional_text("artist", s.artist)
    s.cutn_batches = _number_or_schedule("cutn_batches", s.cutn_batches, *limits_of("cutn_batches"), whole=True)
    s.diffusion_sampling_mode = _choice(
        "diffusion_sampling_mode", s.diffusion_sampling_mode, choices("diffusion_sampling_mode")
    )
    s.eta = _float("eta", s.eta, *limits_of("eta"))
    s.clamp_grad = _bool("clamp_grad", s.clamp_grad)
    s.clamp_max = _number_or_schedule("clamp_max", s.clamp_max, *limits_of("clamp_max"))
    if s.clamp_grad and min(s.schedule("clamp_max")) <= 0:
        at = "at every step " if isinstance(s.clamp_max, str) else ""
        raise SettingsError("clamp_max", f"must be > 0 {at}when clamp_grad is on, got {s.clamp_max!r}")
    s.randomize_class = _bool("randomize_class", s.randomize_class)
    s.clip_denoised = _bool("clip_denoised", s.clip_denoised)
    s.fuzzy_prompt = _bool("fuzzy_prompt", s.fuzzy_prompt)
    s.rand_mag = _float("rand_mag", s.rand_mag, *limits_of("rand_mag"))
    overview = count_schedule("cut_overview", s.cut_overview)
    inner = count_schedule("cut_innercut", s.cut_innercut)
    if any(o + i == 0 for o, i in zip(overview, inner, strict=True)):
        raise SettingsError("cut_innercut", "cut_overview + cut_innercut must be at least 1 at every step")
    if any(p <= 0 for p in parse_schedule("cut_ic_pow", s.cut_ic_pow)):
        raise SettingsError("cut_ic_pow", f"must be > 0, got {s.cut_ic_pow!r}")
    if any(not 0 <= p <= 1 for p in parse_schedule("cut_icgray_p", s.cut_icgray_p)):
        raise SettingsError("cut_icgray_p", f"probabilities must be in [0, 1], got {s.cut_icgray_p!r}")
    if isinstance(s.cut_ic_pow, int | float) and not isinstance(s.cut_ic_pow, bool):
        s.cut_ic_pow = float(s.cut_ic_pow)
    s.batch_size = _int("batch_size", s.batch_size, *limits_of("batch_size"))
    s.diffusion_model = _diffusion_model(s.diffusion_model)
    s.use_secondary_model = _bool("use_secondary_model", s.use_secondary_model)
    s.skip_augs = _bool("skip_augs", s.skip_augs)
    s.clip_models = _clip_models(s.clip_models)
    s.use_horizontal_symmetry = _bool("use_horizontal_symmetry", s.use_horizontal_symmetry)
    s.use_vertical_symmetry = _bool("use_vertical_symmetry", s.use_vertical_symmetry)
    s.transformation_percent = _fractions("transformation_percent", s.transformation_percent)
    _check_model_needs(s)
    _animation(s)
    _check_cost(s, limits)
    from .prompts import check_prompts  # parsing needs the settings' error type; CLIP's tokenizer loads lazily

    check_prompts(s.text_prompts, s.style, s.artist, tokens=tokens, clip_models=s.clip_models)
    return s


def _diffusion_model(value: Any) -> str:
    """A registry model's name (in any case), or the path of a checkpoint file (not read here:
    where the file is read decides whether it may be; a URL is never fetched)."""
    names = choices("diffusion_model")
    if isinstance(value, str):
        by_lower = {n.lower(): n for n in names}
        if value.strip().lower() in by_lower:
            return by_lower[value.strip().lower()]
        if "://" in value:
            raise SettingsError(
                "diffusion_model",
                f"a URL is not read ({value!r}): download the checkpoint and give its path, or name a model",
            )
        if is_checkpoint_path(value) and value.strip() == value and "\0" not in value:
            return value
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(
        "diffusion_model",
        f"must be one of {list(names)} or a checkpoint path ending in {' or '.join(CHECKPOINT_SUFFIXES)}, "
        f"got {value!r}{hint}",
    )


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


def _clip_models(value: Any) -> list[str]:
    """A list of offered model names, in order, each once; one name, or names separated by commas or
    spaces in one text (a form field), also do. Case is forgiven (``vit-b-32::openai``)."""
    offered = "offered: " + ", ".join(CLIP_MODELS)
    names = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names or names == [""]:
        raise SettingsError("clip_models", f"must be a non-empty list of CLIP models, got {value!r}; {offered}")
    by_lower = {name.lower(): name for name in CLIP_MODELS}
    chosen: list[str] = []
    for name in names:
        known = by_lower.get(name.lower()) if isinstance(name, str) else None
        if known is None:
            close = difflib.get_close_matches(name, CLIP_MODELS, n=1, cutoff=0.5) if isinstance(name, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError("clip_models", f"unknown CLIP model {name!r}{hint}; {offered}")
        if known in chosen:
            raise SettingsError("clip_models", f"{known!r} is named twice; name each model once")
        chosen.append(known)
    return chosen


def _check_cost(s: Settings, limits: Limits) -> None:
    cap = limits.max_pixel_steps
    cost = s.width * s.height * (s.steps - s.skip_steps)
    if cap is not None and cost > cap:
        raise SettingsError(
            "steps",
            f"{s.width}x{s.height} pixels x {s.steps - s.skip_steps} steps (steps - skip_steps) is {cost} "
            f"pixel-steps, above this server's cap of {cap} (DISCO_MAX_PIXEL_STEPS): "
            "lower width_height or steps, or raise skip_steps",
        )


def _text_prompts(value: Any) -> list[str] | dict[int, list[str]]:
    if isinstance(value, Mapping):
        return _prompt_schedule(value)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise SettingsError("text_prompts", f"must be a non-empty list of prompts, got {value!r}")
    for p in value:
        if not isinstance(p, str) or not p.strip():
            raise SettingsError("text_prompts", f"every prompt must be non-empty text, got {p!r}")
    return list(value)


def _prompt_schedule(value: Mapping) -> dict[int, list[str]]:
    """``{frame: [prompts]}`` (the notebook's form; frame numbers may come as text, e.g. from JSON)."""
    if not value:
        raise SettingsError("text_prompts", "a mapping of frame numbers to prompts must not be empty")
    schedule: dict[int, list[str]] = {}
    for key, prompts in value.items():
        frame = key
        if isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
            frame = int(key.strip())
        elif isinstance(key, float) and key.is_integer():
            frame = int(key)
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < 10**9:
            raise SettingsError("text_prompts", f"keys must be frame numbers (whole numbers >= 0), got {key!r}")
        if frame in schedule:
            raise SettingsError("text_prompts", f"frame {frame} is given twice")
        schedule[frame] = _text_prompts(prompts) if not isinstance(prompts, Mapping) else _not_nested(prompts)
    return dict(sorted(schedule.items()))


def _not_nested(value: Mapping) -> list[str]:
    raise SettingsError("text_prompts", f"each frame's prompts must be a list of texts, got {dict(value)!r}")


def _animation(s: Settings) -> None:
    """The animation settings; for an animation ``n_batches`` is 1 (one animation per run, as in the notebook)."""
    s.animation_mode = _animation_mode(s.animation_mode)
    s.max_frames = _int("max_frames", s.max_frames, *limits_of("max_frames"))
    for name in KEYFRAME_SETTINGS:
        value = getattr(s, name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(float(value)) if math.isfinite(value) else value  # one number: every frame
        if not isinstance(value, str):
            raise SettingsError(name, f"must be key frames as text such as '0: (1), 10: (1.05)', got {value!r}")
        setattr(s, name, value)
        from .keyframes import keyframe_series, parse_keyframe_values

        if s.animation_mode == "2D":
            keyframe_series(name, value, s.max_frames)  # every frame's value: a bad one fails now
        else:
            parse_keyframe_values(name, value)
    s.frames_scale = _float("frames_scale", s.frames_scale, *limits_of("frames_scale"))
    frames_skip_steps(s)
    if s.video_init_path is not None and not isinstance(s.video_init_path, str | bytes):
        raise SettingsError(
            "video_init_path", f"must be a video file's path or bytes, got {type(s.video_init_path).__name__}"
        )
    s.video_init_path = s.video_init_path or None
    s.extract_nth_frame = _int("extract_nth_frame", s.extract_nth_frame, *limits_of("extract_nth_frame"))
    s.video_init_seed_continuity = _bool("video_init_seed_continuity", s.video_init_seed_continuity)
    s.fps = _float("fps", s.fps, *limits_of("fps"))
    s.resume_run = _bool("resume_run", s.resume_run)
    if s.resume_from_frame is not None:
        s.resume_from_frame = _int("resume_from_frame", s.resume_from_frame, 0, s.max_frames - 1)
    if s.animation_mode != "None":
        s.n_batches = 1


def _animation_mode(value: Any) -> str:
    if isinstance(value, str):
        canonical = {mode.lower(): mode for mode in ANIMATION_MODES}.get(value.strip().lower())
        if canonical:
            return canonical
        if value.strip().lower() == "3d":
            raise SettingsError(
                "animation_mode",
                "'3D' is not offered: it needs depth models (MiDaS, AdaBins) that this service does not have; "
                f"use one of {list(ANIMATION_MODES)}",
            )
    raise SettingsError("animation_mode", f"must be one of {list(ANIMATION_MODES)}, got {value!r}")


_PERCENT = re.compile(r"\s*(\d{1,2}(?:\.\d+)?)\s*%\s*")


def frames_skip_steps(s: Settings) -> int:
    """The steps skipped for every animation frame after the first: ``floor(steps * percentage / 100)``,
    as the notebook computes them from ``frames_skip_steps`` (e.g. ``"60%"``)."""
    match = _PERCENT.fullmatch(s.frames_skip_steps) if isinstance(s.frames_skip_steps, str) else None
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


def _width_height(value: Any, limits: Limits) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SettingsError("width_height", f"must be [width, height], got {value!r}")
    w, h = (_int("width_height", v, 64) for v in value)
    if w % 64 or h % 64:
        raise SettingsError("width_height", f"width and height must be multiples of 64, got [{w}, {h}]")
    if w * h > limits.max_pixels:
        raise SettingsError(
            "width_height",
            f"{w}x{h} is {w * h} pixels, above this server's cap of {limits.max_pixels} (DISCO_MAX_PIXELS)",
        )
    return [w, h]


# Windows device names, refused as a file name's stem in any case (with or without an extension)
_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³"}


def _batch_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problem = f"is not text but {type(value).__name__}"
    elif bad := next((c for c in value if not _name_character(c)), None):
        problem = f"{bad!r} is not allowed"
    elif len(value) > 100 or len(value.encode()) > BATCH_NAME_BYTES:
        problem = f"is {len(value)} characters, {len(value.encode())} bytes of UTF-8 long"
    elif value.startswith("."):
        problem = "starts with '.'"
    elif value.split(".")[0].rstrip(" ").upper() in _DEVICE_NAMES:
        problem = "is a Windows device name"
    else:
        return value
    raise SettingsError("batch_name", f"{problem}; allowed: {BATCH_NAME_ALLOWED}; got {value!r}")


def _name_character(c: str) -> bool:
    """A letter, mark (accents, vowel signs) or digit of any script, a space, or one of _ . ( ) -."""
    return unicodedata.category(c)[0] in "LMN" or c in " _.()-"


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
)
KEYFRAME_SETTINGS = ("angle", "zoom", "translation_x", "translation_y")


@cache
def kind(name: str) -> str:
    """The kind of value a setting holds, from its field's type: one of ``KINDS``.

    ``int``: whole numbers (also when a transport turned them into floats), ``float``: any number,
    ``number_or_schedule``: a number or a schedule text, ``int_or_schedule``: a whole number or a
    schedule text of whole numbers, ``texts``: a list of texts (``text_prompts`` also a mapping of
    frame numbers to such lists), ``numbers``: a list of numbers, ``size``: two whole numbers,
    ``image``: a path, URL or bytes (``init_image``), ``video``: a video file's path or bytes
    (``video_init_path``, marked so in its ``Annotated`` type).
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
    if hint is float:
        return "float"
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


def settings_schema(limits: Limits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """Every setting as plain data, for a form: name, kind, default (and ``shown``, the default in
    words), meaning, what is allowed (in words, and as ``low``/``high``/``choices`` where the
    validator has them, with what each choice is for in ``choice_meanings``) and whether it is one
    of the seed API's parameters, and its ``group`` (``"motion"`` for the animation settings, else
    None). ``limits`` words the server's own caps (pixels; pixel-steps
    under ``steps`` when the server has such a cap)."""
    rows = []
    for name in SETTING_NAMES:
        meaning, allowed, shown = describe(name)
        if name == "width_height":
            allowed = f"multiples of 64, at most {limits.max_pixels} pixels (width x height)"
        if name == "steps" and limits.max_pixel_steps is not None:
            allowed += f", and width x height x (steps - skip_steps) at most {limits.max_pixel_steps} pixel-steps"
        low, high = limits_of(name)
        rows.append(
            {
                "name": name,
                "kind": kind(name),
                "default": default(name),
                "shown": shown,
                "meaning": meaning,
                "allowed": allowed,
                "low": low,
                "high": high,
                "choices": list(choices(name) or []) or None,
                "choice_meanings": choice_meanings(name) or None,
                "seed_api": name in SEED_API_NAMES,
                "group": "motion" if name in MOTION_SETTINGS else None,
            }
        )
    return rows
