"""The settings in words and as plain data: ``describe`` for ``--help``, ``settings_schema`` for a form."""

from __future__ import annotations

from typing import Any

from ..errors import DEFAULT_LIMITS, Limits
from .fields import (
    FIELD_META,
    MOTION_SETTINGS,
    SEED_API_NAMES,
    SETTING_NAMES,
    choice_meanings,
    choices,
    default,
    kind,
    limits_of,
)


def describe(name: str) -> tuple[str, str, str]:
    """A setting's meaning, what is allowed and its default, in words (for ``--help``)."""
    meta, value = FIELD_META[name], default(name)
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
