"""Each setting's value read into its type, one setting at a time, driven by the field table.

A field's kind (``fields.kind``) picks its reader, with the bounds and choices of its field; the
settings whose text has a grammar or whose values are names have a reader of their own
(``READERS``). Rules between settings (skip_steps below steps, ...) are ``validation``'s.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from ..clip_catalog import CLIP_MODELS
from ..errors import Limits, SettingsError, finite
from ..keyframes import parse_keyframe_values
from ..models import CHECKPOINT_SUFFIXES, is_checkpoint_path
from .fields import (
    KEYFRAME_3D_SETTINGS,
    KEYFRAME_SETTINGS,
    SETTING_NAMES,
    VIDEO_INIT_OVERRIDES,
    choices,
    default,
    kind,
    limits_of,
)
from .prompt_text import parse_image_prompt, structured_text
from .scalars import read_bool, read_choice, read_float, read_int, read_optional_text
from .schedules import bool_schedule, count_schedule, number_or_schedule, parse_schedule
from .texts import (
    ANIMATION_MODES,
    BATCH_NAME_ALLOWED,
    BATCH_NAME_BYTES,
    MAX_STEPS,
    MAX_TRANSFORMATIONS,
    PERLIN_ALIASES,
    VIDEO_BLEND_MODES,
)

Reader = Callable[[str, Any, Limits], Any]
PERCENTAGE = re.compile(r"\s*(\d{1,2}(?:\.\d+)?)\s*%\s*")  # frames_skip_steps, e.g. "60%"


def coerce_settings(data: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """Every setting, in the field table's order, read from ``data`` (its default where ``data``
    has none) into its type: a new dict, ``data`` is not changed. Raises ``SettingsError`` naming
    the first setting that cannot be read. ``data`` must hold setting names only."""
    return {name: read_setting(name, data[name] if name in data else default(name), limits) for name in SETTING_NAMES}


def read_setting(name: str, value: Any, limits: Limits) -> Any:
    """One setting's value read into its type (see ``coerce_settings``)."""
    reader = READERS.get(name) or KIND_READERS[kind(name)]
    return reader(name, value, limits)


# ----- a reader for each kind of field: its bounds and choices come from the field table -----


def _whole(name: str, value: Any, limits: Limits) -> int | None:
    if value is None and default(name) is None:  # an optional whole number (seed, resume_from_frame)
        return None
    return read_int(name, value, *limits_of(name))


def _text(name: str, value: Any, limits: Limits) -> str:
    if choices(name):
        return read_choice(name, value, choices(name), PERLIN_ALIASES if name == "perlin_mode" else None)
    if not isinstance(value, str):
        raise SettingsError(name, f"must be text, got {value!r}")
    return value


KIND_READERS: dict[str, Reader] = {
    "bool": lambda name, value, limits: read_bool(name, value),
    "bool_or_schedule": lambda name, value, limits: _bool_or_schedule(name, value, limits),
    "int": _whole,
    "float": lambda name, value, limits: read_float(name, value, *limits_of(name)),
    "number_or_schedule": lambda name, value, limits: number_or_schedule(name, value, *limits_of(name)),
    "int_or_schedule": lambda name, value, limits: number_or_schedule(name, value, *limits_of(name), whole=True),
    "text": _text,
    "optional_text": lambda name, value, limits: read_optional_text(name, value),
}


# ----- readers of their own -----


def _text_prompts(name: str, value: Any, limits: Limits) -> list[str] | dict[int, list[str]]:
    if isinstance(value, Mapping):
        return _prompt_schedule(value, limits)
    return _prompt_list(value, limits)


def _prompt_list(value: Any, limits: Limits, frame: int | None = None) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise SettingsError("text_prompts", f"must be a non-empty list of prompts, got {value!r}")
    if len(value) > limits.max_prompts:  # each prompt is embedded by every CLIP model at every step
        where = "per request" if frame is None else "per frame of a schedule"
        at = "" if frame is None else f" at frame {frame}"
        raise SettingsError(
            "text_prompts", f"at most {limits.max_prompts} prompts are allowed {where}, got {len(value)}{at}"
        )
    prompts: list[str | dict[str, Any]] = []
    for p in value:
        if isinstance(p, Mapping):  # the structured form: its keys and text checked here, its weight by prompt_text
            text = structured_text(p)
            models = p.get("clip_models")
            if models is not None:
                try:
                    p = {**p, "clip_models": _clip_models("text_prompts", models, limits)}
                except SettingsError as exc:
                    problem = str(exc).removeprefix("text_prompts: ")
                    raise SettingsError("text_prompts", f"prompt {text!r}: its clip_models: {problem}") from None
            prompts.append({k: v for k, v in p.items() if v is not None})
            continue
        if not isinstance(p, str) or not p.strip():
            raise SettingsError("text_prompts", f"every prompt must be non-empty text, got {p!r}")
        prompts.append(p)
    return prompts


def _prompt_schedule(value: Mapping, limits: Limits) -> dict[int, list[str]]:
    """``{frame: [prompts]}`` (the notebook's form; frame numbers may come as text, e.g. from JSON)."""
    if not value:
        raise SettingsError("text_prompts", "a mapping of frame numbers to prompts must not be empty")
    schedule: dict[int, list[str]] = {}
    for key, prompts in value.items():
        frame = key
        if isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
            frame = int(key.strip())
        elif isinstance(key, float) and not math.isfinite(key):
            finite("text_prompts", key, " as a frame number")
        elif isinstance(key, float) and key.is_integer():
            frame = int(key)
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < 10**9:
            raise SettingsError("text_prompts", f"keys must be frame numbers (whole numbers >= 0), got {key!r}")
        if frame in schedule:
            raise SettingsError("text_prompts", f"frame {frame} is given twice")
        if isinstance(prompts, Mapping):
            raise SettingsError("text_prompts", f"each frame's prompts must be a list of texts, got {dict(prompts)!r}")
        schedule[frame] = _prompt_list(prompts, limits, frame)
    total = sum(len(prompts) for prompts in schedule.values())
    if total > limits.max_prompts:  # the encoder embeds every frame's prompts at once
        raise SettingsError(
            "text_prompts",
            f"at most {limits.max_prompts} prompts are allowed per request, got {total} over the "
            f"{len(schedule)} frames of the schedule",
        )
    return dict(sorted(schedule.items()))


def _bool_or_schedule(name: str, value: Any, limits: Limits) -> bool | str:
    """True or false, or a schedule of them (kept as written) that ``bool_schedule`` reads."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, str | list | tuple):
        return read_bool(name, value)
    steps = bool_schedule(name, value)
    if isinstance(value, str):
        return value
    return schedule_text(steps)


def schedule_text(steps: list[bool]) -> str:
    """On/off values by step as the schedule grammar writes them: ``[True]*400+[False]*600``."""
    runs: list[list] = []
    for on in steps:
        if runs and runs[-1][0] == on:
            runs[-1][1] += 1
        else:
            runs.append([on, 1])
    return "+".join(f"[{on}]*{n}" for on, n in runs)


def _model_schedules(name: str, value: Any, limits: Limits) -> dict[str, str] | None:
    """CLIP model names to on/off schedules: a mapping, its JSON text, or ``MODEL=SCHEDULE`` entries
    separated by ';' or new lines (a form's text field). Each schedule is kept as written (true/false
    or lists become schedule text); names are read as ``clip_models`` reads them."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == {}:
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SettingsError(name, f"is not a JSON object of model names to schedules ({exc})") from None
    elif isinstance(value, str | list | tuple):
        entries = re.split(r"[;\n]+", value) if isinstance(value, str) else value
        pairs = {}
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                continue
            model, sep, schedule = entry.partition("=")
            if not sep or not model.strip() or not schedule.strip():
                example = "RN50::openai=[True]*500+[False]*500"
                raise SettingsError(name, f"write each entry as MODEL=SCHEDULE, e.g. {example}, got {entry.strip()!r}")
            pairs[model.strip()] = schedule.strip()
        value = pairs
    if not isinstance(value, Mapping):
        raise SettingsError(
            name, f"must map CLIP model names to schedules such as [True]*500+[False]*500, got {value!r}"
        )
    schedules: dict[str, str] = {}
    for model, schedule in value.items():
        (known,) = _clip_models(name, [model], limits)
        if known in schedules:
            raise SettingsError(name, f"{known!r} is named twice; name each model once")
        try:
            steps = bool_schedule(name, schedule)
        except SettingsError as exc:
            raise SettingsError(name, f"{known}: {str(exc).removeprefix(name + ': ')}") from None
        schedules[known] = schedule.strip() if isinstance(schedule, str) else schedule_text(steps)
    return schedules or None  # no entries ([], "; ") means none, as None and {} do: one form for the wire


def _image_prompts(name: str, value: Any, limits: Limits) -> list[str | bytes]:
    """A list of image prompts (``"path:weight"``, data URIs, bytes); one alone, or None, also do."""
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes | bytearray):
        value = [value]
    if not isinstance(value, list | tuple):
        raise SettingsError(name, f"must be a list of images' paths, bytes or data URIs, got {type(value).__name__}")
    if len(value) > limits.max_prompts:  # each is embedded by every CLIP model and judged at every step
        raise SettingsError(name, f"at most {limits.max_prompts} image prompts are allowed, got {len(value)}")
    for prompt in value:
        parse_image_prompt(prompt)
    return [bytes(p) if isinstance(p, bytearray) else p for p in value]


def _image(name: str, value: Any, limits: Limits) -> str | bytes | None:
    if value is not None and not isinstance(value, str | bytes):
        raise SettingsError(name, f"must be a file path, a URL or image bytes, got {type(value).__name__}")
    return None if value == "" else value


def _video(name: str, value: Any, limits: Limits) -> str | bytes | None:
    if value is not None and not isinstance(value, str | bytes):
        raise SettingsError(name, f"must be a video file's path or bytes, got {type(value).__name__}")
    return value or None


def _width_height(name: str, value: Any, limits: Limits) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SettingsError(name, f"must be [width, height], got {value!r}")
    w, h = (read_int(name, v, 64) for v in value)
    if w % 64 or h % 64:
        raise SettingsError(name, f"width and height must be multiples of 64, got [{w}, {h}]")
    if w * h > limits.max_pixels:
        raise SettingsError(
            name, f"{w}x{h} is {w * h} pixels, above this server's cap of {limits.max_pixels} (DISCO_MAX_PIXELS)"
        )
    return [w, h]


# Windows device names, refused as a file name's stem in any case (with or without an extension)
_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³"}


def _batch_name(name: str, value: Any, limits: Limits) -> str:
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
    raise SettingsError(name, f"{problem}; allowed: {BATCH_NAME_ALLOWED}; got {value!r}")


def _name_character(c: str) -> bool:
    """A letter, mark (accents, vowel signs) or digit of any script, a space, or one of _ . ( ) -."""
    return unicodedata.category(c)[0] in "LMN" or c in " _.()-"


def _output_dir(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise SettingsError(name, f"must be a directory path, got {value!r}")
    return str(value)


def _diffusion_model(name: str, value: Any, limits: Limits) -> str:
    """A registry model's name (in any case), or the path of a checkpoint file (not read here:
    where the file is read decides whether it may be; a URL is never fetched)."""
    names = choices(name)
    if isinstance(value, str):
        by_lower = {n.lower(): n for n in names}
        if value.strip().lower() in by_lower:
            return by_lower[value.strip().lower()]
        if "://" in value:
            raise SettingsError(
                name, f"a URL is not read ({value!r}): download the checkpoint and give its path, or name a model"
            )
        if is_checkpoint_path(value) and value.strip() == value and "\0" not in value:
            return value
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(
        name,
        f"must be one of {list(names)} or a checkpoint path ending in {' or '.join(CHECKPOINT_SUFFIXES)}, "
        f"got {value!r}{hint}",
    )


def _clip_models(name: str, value: Any, limits: Limits) -> list[str]:
    """A list of offered model names, in order, each once; one name, or names separated by commas or
    spaces in one text (a form field), also do. Case is forgiven (``vit-b-32::openai``)."""
    offered = "offered: " + ", ".join(CLIP_MODELS)
    names = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names or names == [""]:
        raise SettingsError(name, f"must be a non-empty list of CLIP models, got {value!r}; {offered}")
    by_lower = {model.lower(): model for model in CLIP_MODELS}
    chosen: list[str] = []
    for model in names:
        known = by_lower.get(model.lower()) if isinstance(model, str) else None
        if known is None:
            close = difflib.get_close_matches(model, CLIP_MODELS, n=1, cutoff=0.5) if isinstance(model, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(name, f"unknown CLIP model {model!r}{hint}; {offered}")
        if known in chosen:
            raise SettingsError(name, f"{known!r} is named twice; name each model once")
        chosen.append(known)
    return chosen


def _fractions(name: str, value: Any, limits: Limits) -> list[float]:
    """Fractions of the run: a list of 1 to ``MAX_TRANSFORMATIONS`` numbers in (0, 1); one number
    stands for a list of one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    allowed = f"1 to {MAX_TRANSFORMATIONS} fractions of the run, each between 0 and 1 (both excluded), e.g. [0.09]"
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_TRANSFORMATIONS:
        raise SettingsError(name, f"must be {allowed}, got {value!r}")
    fractions = [read_float(name, v) for v in value]
    if (bad := next((f for f in fractions if not 0 < f < 1), None)) is not None:
        raise SettingsError(name, f"must be {allowed}, got {bad}")
    return fractions


def _cut_counts(name: str, value: Any, limits: Limits) -> Any:
    if _left_out(value):
        return None  # cut_schedules_group's (validation fills it in)
    count_schedule(name, value)  # checked; kept as written
    return value


def _cut_ic_pow(name: str, value: Any, limits: Limits) -> float | str | None:
    if _left_out(value):
        return None
    if any(p <= 0 for p in parse_schedule(name, value)):
        raise SettingsError(name, f"must be > 0, got {value!r}")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _left_out(value: Any) -> bool:
    """A cut setting not given: None, or empty text (an empty field of a form)."""
    return value is None or (isinstance(value, str) and not value.strip())


def _probabilities(name: str, value: Any, limits: Limits) -> Any:
    if name == "cut_icgray_p" and _left_out(value):
        return None
    if any(not 0 <= p <= 1 for p in parse_schedule(name, value)):
        raise SettingsError(name, f"probabilities must be in [0, 1], got {value!r}")
    return value


def _animation_mode(name: str, value: Any, limits: Limits) -> str:
    if isinstance(value, str):
        canonical = {mode.lower(): mode for mode in ANIMATION_MODES}.get(value.strip().lower())
        if canonical:
            return canonical
    raise SettingsError(name, f"must be one of {list(ANIMATION_MODES)}, got {value!r}")


def _blend_mode(name: str, value: Any, limits: Limits) -> str:
    """One of ``VIDEO_BLEND_MODES`` in any case (``"none"`` is ``"None"``)."""
    if isinstance(value, str):
        canonical = {mode.lower(): mode for mode in VIDEO_BLEND_MODES}.get(value.strip().lower())
        if canonical:
            return canonical
    raise SettingsError(name, f"must be one of {list(VIDEO_BLEND_MODES)}, got {value!r}")


def _video_init_override(name: str, value: Any, limits: Limits) -> Any:
    """A ``video_init_*`` override: None (the setting it replaces keeps its value), or a value read
    as that setting's own (its reader, with the override's bounds and name in the error)."""
    if value is None:
        return None
    replaced = VIDEO_INIT_OVERRIDES[name]
    return (READERS.get(replaced) or KIND_READERS[kind(replaced)])(name, value, limits)


def _keyframes(name: str, value: Any, limits: Limits) -> str:
    """Key frames as text, their syntax and expressions checked (one number: every frame's value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(finite(name, value))
    if not isinstance(value, str):
        raise SettingsError(name, f"must be key frames as text such as '0: (1), 10: (1.05)', got {value!r}")
    parse_keyframe_values(name, value)
    return value


def _percentage(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str) or not PERCENTAGE.fullmatch(value):
        raise SettingsError(name, f"must be a percentage from 0% to 99% such as '60%', got {value!r}")
    return value


def _turbo_steps(name: str, value: Any, limits: Limits) -> int:
    """A whole number; also as text, since the notebook's form offers ``"2"`` to ``"6"``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    return read_int(name, value, *limits_of(name))


def _intermediate_saves(name: str, value: Any, limits: Limits) -> int | list[int]:
    """A count (a whole number >= 0) or a list of step numbers (whole numbers >= 1, in order, each
    once), as the notebook's ``intermediate_saves``; also as text (a form, the command line):
    ``"2"`` is a count, ``"[5, 9, 34]"`` (or ``"5, 9, 34"``, ``"[]"``) a list."""
    if isinstance(value, str):
        text = value.strip()
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        parts = [part for part in re.split(r"[\s,]+", inner) if part]
        if not all(part.isascii() and part.isdigit() for part in parts) or (not parts and inner == text):
            raise SettingsError(name, f"must be a count or a list of steps such as [5, 9, 34], got {value!r}")
        single = inner == text and len(parts) == 1 and "," not in text
        value = int(parts[0]) if single else [int(part) for part in parts]
    if isinstance(value, list | tuple):
        if len(value) > MAX_STEPS:
            raise SettingsError(name, f"at most {MAX_STEPS} steps may be listed, got {len(value)}")
        return sorted({read_int(name, v, 1, MAX_STEPS) for v in value})
    return read_int(name, value, 0, MAX_STEPS)


READERS: dict[str, Reader] = {
    "text_prompts": _text_prompts,
    "init_image": _image,
    "width_height": _width_height,
    "batch_name": _batch_name,
    "output_dir": _output_dir,
    "cut_overview": _cut_counts,
    "cut_innercut": _cut_counts,
    "cut_ic_pow": _cut_ic_pow,
    "cut_icgray_p": _probabilities,
    "diffusion_model": _diffusion_model,
    "clip_models": _clip_models,
    "transformation_percent": _fractions,
    "animation_mode": _animation_mode,
    **dict.fromkeys(KEYFRAME_SETTINGS + KEYFRAME_3D_SETTINGS, _keyframes),
    "frames_skip_steps": _percentage,
    "video_init_path": _video,
    "turbo_steps": _turbo_steps,
    "intermediate_saves": _intermediate_saves,
    "video_init_blend_mode": _blend_mode,
    **dict.fromkeys(VIDEO_INIT_OVERRIDES, _video_init_override),
    "clip_models_schedules": _model_schedules,
    "image_prompts": _image_prompts,
}
