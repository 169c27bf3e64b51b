"""A setting's value over the 1000 virtual steps, for a preview: what a schedule makes of each step.

Every setting a schedule may hold is read here with its own reader (the same checks, the same
messages, as a job's settings get), then spread over the virtual steps: a number or schedule setting
(``clip_guidance_scale``, ``cutn_batches``, ``cut_overview``, ``cut_icgray_p``, ...) by
``parse_schedule``, a true/false one (``use_secondary_model``, ``clamp_grad``) by ``bool_schedule``
(1 on, 0 off), one prompt line of ``text_prompts`` by its weight (``"a lighthouse:[1]*500+[0]*500"``)
and one ``MODEL=SCHEDULE`` entry of ``clip_models_schedules`` by its on/off schedule.

``text_prompts`` may also be previewed in its two other forms (``preview_prompts``): one structured
prompt ``{"text": ..., "weight": <number or schedule>, "clip_models": [...]}`` (its weight over the
steps and the CLIP models it applies to), and the notebook's prompts by frame for animations
(``{"0": ["a lighthouse:2", "fog"], "100": [...]}``: for each frame key, the prompts in force from
that frame until the next key, each with its weight over the steps).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DEFAULT_LIMITS, Limits, SettingsError
from .coercion import read_setting
from .fields import SETTING_NAMES, kind
from .prompt_text import PROMPT_KEYS, parse_prompt
from .schedules import bool_schedule, parse_schedule

__all__ = [
    "MAX_PREVIEW_CHARS",
    "PREVIEWED_SETTINGS",
    "FramePrompts",
    "PromptPreview",
    "SchedulePreview",
    "preview_prompts",
    "preview_schedule",
    "runs",
]

# The longest value previewed: a schedule that lists every one of the 1000 steps' values in full
# (``[0.125, 0.25, ...]``) fits many times over.
MAX_PREVIEW_CHARS = 20_000
_SCHEDULE_KINDS = ("number_or_schedule", "int_or_schedule", "bool_or_schedule")
_CUT_SCHEDULES = ("cut_overview", "cut_innercut", "cut_icgray_p")
# The settings whose value may be a schedule over the virtual steps, in the settings' order.
PREVIEWED_SETTINGS = tuple(
    name
    for name in SETTING_NAMES
    if kind(name) in _SCHEDULE_KINDS or name in _CUT_SCHEDULES or name in ("text_prompts", "clip_models_schedules")
)


@dataclass(frozen=True)
class SchedulePreview:
    """``values``: the setting's value at each of the 1000 virtual steps (index ``1000 - t``, as the
    sampler reads them; true/false as 1/0); ``schedule``: whether the value was written as a schedule
    (``[...]`` terms) rather than one number, one true/false or a prompt with one weight."""

    setting: str
    values: tuple[float, ...]
    schedule: bool


def preview_schedule(setting: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> SchedulePreview:
    """``value`` of ``setting`` (one of ``PREVIEWED_SETTINGS``) over the 1000 virtual steps.

    ``value``: the setting's value as a job would send it (text, a number, true/false); for
    ``text_prompts`` one prompt (``"text:weight"``, the weight a number or schedule), for
    ``clip_models_schedules`` one ``MODEL=SCHEDULE`` entry. Raises ``SettingsError`` naming
    ``setting`` for a value its reader refuses, empty text, or text over ``MAX_PREVIEW_CHARS``
    characters; ``ValueError`` when ``setting`` is not one whose value may be a schedule."""
    if setting not in PREVIEWED_SETTINGS:
        shown = setting if isinstance(setting, str) and len(setting) <= 60 else "that name"
        raise ValueError(
            f"{shown!r} is not a setting whose value may be a schedule; these are: {', '.join(PREVIEWED_SETTINGS)}"
        )
    if isinstance(value, str) and len(value) > MAX_PREVIEW_CHARS:
        raise SettingsError(setting, f"the value is {len(value)} characters long; a preview takes {MAX_PREVIEW_CHARS}")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(setting, "has no value to preview: write a number or a schedule such as [12]*400+[4]*600")
    if setting == "text_prompts":
        if not isinstance(value, str):
            raise SettingsError(setting, f"preview one prompt as text ('text:weight'), got {value!r}")
        read_setting(setting, [value], limits)
        prompt = parse_prompt(value)
        return SchedulePreview(setting, tuple(float(w) for w in prompt.weights()), prompt.schedule is not None)
    read = read_setting(setting, value, limits)
    if setting == "clip_models_schedules":
        if not read or len(read) != 1:
            raise SettingsError(setting, f"preview one MODEL=SCHEDULE entry at a time, got {len(read or ())}")
        (written,) = read.values()
        return SchedulePreview(setting, _on_off(setting, written), _written_as_schedule(written))
    if kind(setting) == "bool_or_schedule":
        return SchedulePreview(setting, _on_off(setting, read), _written_as_schedule(read))
    if read is None:  # an optional override left out: nothing replaces the setting it overrides
        raise SettingsError(setting, "has no value to preview: write a number or a schedule such as [12]*400+[4]*600")
    return SchedulePreview(setting, tuple(parse_schedule(setting, read)), _written_as_schedule(read))


@dataclass(frozen=True)
class PromptPreview:
    """One prompt of ``text_prompts`` over the 1000 virtual steps: ``text`` (without its weight);
    ``clip_models``: the only CLIP models that judge the image against it (None: every model of the
    job's ``clip_models``); ``values``: its weight at each virtual step (not yet divided by the sum
    of the weights beside it); ``schedule``: whether the weight was written as a schedule."""

    text: str
    clip_models: tuple[str, ...] | None
    values: tuple[float, ...]
    schedule: bool


@dataclass(frozen=True)
class FramePrompts:
    """The prompts in force from animation frame ``frame`` (a key of the prompts by frame) to
    ``until`` (the frame before the next key; None: to the last frame). Frames before the first key
    take the first key's prompts, as the notebook fills its prompt series backwards."""

    frame: int
    until: int | None
    prompts: tuple[PromptPreview, ...]


def preview_prompts(value: Any, limits: Limits = DEFAULT_LIMITS) -> PromptPreview | tuple[FramePrompts, ...]:
    """``text_prompts`` written in one of its forms, read as a job's ``text_prompts`` are read.

    ``value``: one prompt line (``"a lighthouse:[1]*500+[0]*500"``) or one structured prompt
    (``{"text": ..., "weight": ..., "clip_models": [...]}``, a mapping with any of ``PROMPT_KEYS``):
    its ``PromptPreview``; or the prompts by frame (``{"0": [prompts], "100": [...]}``, the prompts
    lines or structured prompts): a ``FramePrompts`` per frame key, in frame order. A structured or
    by-frame value is measured as JSON against ``MAX_PREVIEW_CHARS``. Raises ``SettingsError`` naming
    ``text_prompts`` (and the prompt, and the frame for the prompts by frame) for a value a job's
    ``text_prompts`` could not hold."""
    if not isinstance(value, Mapping):
        found = preview_schedule("text_prompts", value, limits)  # a str: anything else is refused there
        return PromptPreview(parse_prompt(value).text, None, found.values, found.schedule)
    if _over_json_chars(value, MAX_PREVIEW_CHARS):
        raise SettingsError(
            "text_prompts", f"the value is over {MAX_PREVIEW_CHARS} characters long as JSON; a preview takes that many"
        )
    if any(key in PROMPT_KEYS for key in value):  # one structured prompt
        (prompt,) = read_setting("text_prompts", [value], limits)
        return _prompt_preview(prompt)
    frames = read_setting("text_prompts", value, limits)  # {frame: [prompts]}, in frame order
    keys = list(frames)
    found = []
    for i, frame in enumerate(keys):
        try:
            prompts = tuple(_prompt_preview(p) for p in frames[frame])
        except SettingsError as exc:
            problem = str(exc).removeprefix("text_prompts: ")
            raise SettingsError("text_prompts", f"frame {frame}: {problem}") from None
        found.append(FramePrompts(frame, keys[i + 1] - 1 if i + 1 < len(keys) else None, prompts))
    return tuple(found)


def _over_json_chars(value: Any, limit: int) -> bool:
    """Whether ``value`` written as compact JSON (``separators=(",", ":")``) is longer than ``limit``
    characters (the infinities counted as 3): counted item by item,
    without recursion, and stopped as soon as the count passes ``limit`` (a hostile body of many
    megabytes is refused at its first few thousand items)."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            size += 2 + max(2 * len(item) - 1, 0)  # braces, each key's colon, the commas between
            for key, inner in item.items():
                size += len(json.dumps(str(key)))
                stack.append(inner)
                if size > limit:
                    return True
        elif isinstance(item, list | tuple):
            size += 2 + max(len(item) - 1, 0)
            stack.extend(item[: limit + 1])  # each item takes a character at least
        else:
            size += len(json.dumps(item) if isinstance(item, str) else repr(item))
        if size > limit:
            return True
    return False


def _prompt_preview(prompt: str | Mapping[str, Any]) -> PromptPreview:
    parsed = parse_prompt(prompt)
    values = tuple(float(w) for w in parsed.weights())
    return PromptPreview(parsed.text, parsed.clip_models, values, parsed.schedule is not None)


def _on_off(setting: str, value: Any) -> tuple[float, ...]:
    return tuple(1.0 if on else 0.0 for on in bool_schedule(setting, value))


def _written_as_schedule(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("[")


def runs(values: tuple[float, ...] | list[float]) -> list[list[float | int]]:
    """``values`` run-length encoded: ``[[value, count], ...]`` in step order, the counts summing to
    ``len(values)`` (a schedule of 1000 values in a few pairs, as it was written)."""
    out: list[list[float | int]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out
