"""A setting's value over the 1000 virtual steps, for a preview: what a schedule makes of each step.

Every setting a schedule may hold is read here with its own reader (the same checks, the same
messages, as a job's settings get), then spread over the virtual steps: a number or schedule setting
(``clip_guidance_scale``, ``cutn_batches``, ``cut_overview``, ``cut_icgray_p``, ...) by
``parse_schedule``, a true/false one (``use_secondary_model``, ``clamp_grad``) by ``bool_schedule``
(1 on, 0 off), one prompt line of ``text_prompts`` by its weight (``"a lighthouse:[1]*500+[0]*500"``)
and one ``MODEL=SCHEDULE`` entry of ``clip_models_schedules`` by its on/off schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DEFAULT_LIMITS, Limits, SettingsError
from .coercion import read_setting
from .fields import SETTING_NAMES, kind
from .prompt_text import parse_prompt
from .schedules import bool_schedule, parse_schedule

__all__ = ["MAX_PREVIEW_CHARS", "PREVIEWED_SETTINGS", "SchedulePreview", "preview_schedule", "runs"]

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
