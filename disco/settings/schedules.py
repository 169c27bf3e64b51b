"""The cut-schedule grammar: a value per virtual step, written ``[12]*400+[4]*600`` (read without eval)."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from ..errors import SettingsError
from .scalars import read_float, read_int
from .texts import SCHEDULE_LENGTH

_TERM = re.compile(r"\s*\[([^\[\]]*)\]\s*(?:\*\s*(\d+))?\s*")


def parse_schedule(name: str, value: Any, length: int = SCHEDULE_LENGTH) -> list[float]:
    """A per-virtual-step schedule: a number (constant), a list, or ``[a, b]*n + [c]*m`` text.

    Returns ``length`` finite floats; raises ``SettingsError`` naming ``name`` for anything else
    (a value that is inf, NaN or overflows a float is "not a finite number")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [read_float(name, value)] * length
    if isinstance(value, str):  # the same few texts come again and again (defaults, presets): read once
        return list(_parsed_text(name, value, length))
    return _parsed(name, value, length)


@lru_cache(maxsize=256)
def _parsed_text(name: str, value: str, length: int) -> tuple[float, ...]:
    return tuple(_parsed(name, value, length))


def _parsed(name: str, value: Any, length: int) -> list[float]:
    if isinstance(value, list | tuple):
        values = [read_float(name, v) for v in value]
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
            bad = next((i for i, n in zip(items, numbers, strict=True) if not math.isfinite(n)), None)
            if bad is not None:
                raise SettingsError(name, f"{bad!r} in {value!r} is not a finite number")
            repeats = match.group(2) or "1"
            if len(repeats) > 9:  # more than any length; int() of a very long text raises ValueError
                raise SettingsError(name, f"{value!r} is longer than {length} steps")
            repeat = int(repeats)
            if len(numbers) * repeat > length:
                raise SettingsError(name, f"{value!r} is longer than {length} steps")
            values.extend(numbers * repeat)
    else:
        raise SettingsError(name, f"must be a schedule like '[12]*400+[4]*600' or a number, got {value!r}")
    if len(values) != length:
        raise SettingsError(name, f"must cover exactly {length} steps, {value!r} covers {len(values)}")
    return values


def count_schedule(name: str, value: Any) -> list[int]:
    """A schedule of cutout counts: whole numbers >= 0 at every virtual step."""
    if isinstance(value, str):
        return list(_counts_of_text(name, value))
    return _counts(name, value)


@lru_cache(maxsize=256)
def _counts_of_text(name: str, value: str) -> tuple[int, ...]:
    return tuple(_counts(name, value))


def _counts(name: str, value: Any) -> list[int]:
    values = parse_schedule(name, value)
    if any(v < 0 or not v.is_integer() for v in values):
        raise SettingsError(name, f"cutout counts must be whole numbers >= 0, got {value!r}")
    return [int(v) for v in values]


def number_or_schedule(
    name: str, value: Any, low: float | None = None, high: float | None = None, whole: bool = False
) -> float | int | str:
    """A number (returned as ``read_float``/``read_int`` return it), or a schedule text whose every
    value passes the same checks (returned as written)."""
    check = read_int if whole else read_float
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


_TRUTH = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def bool_schedule(name: str, value: Any) -> list[bool]:
    """On or off at each of the 1000 virtual steps: true/false (or 1/0, as gRPC's Struct sends
    them) for every step, or a schedule of true/false or 1/0 values (``[True]*400+[False]*600``, as
    discoart writes them, or a list). Raises ``SettingsError`` naming ``name``."""
    if isinstance(value, bool):
        return [value] * SCHEDULE_LENGTH
    if isinstance(value, int | float) and value in (0, 1):
        return [bool(value)] * SCHEDULE_LENGTH
    if isinstance(value, list | tuple):
        value = [int(v) if isinstance(v, bool) else v for v in value]
    elif isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "false"):
            return [word == "true"] * SCHEDULE_LENGTH
        value = _TRUTH.sub(lambda m: "1" if m.group(1).lower() == "true" else "0", value)
    elif not isinstance(value, int | float):
        raise SettingsError(name, f"must be true, false or a schedule such as [True]*500+[False]*500, got {value!r}")
    needed = f"a schedule of true/false (1/0) values such as [True]*500+[False]*500 is needed, got {value!r}"
    try:
        values = parse_schedule(name, value)
    except SettingsError as exc:  # the grammar is the number schedules': say what this one takes, then why
        raise SettingsError(name, f"{needed} ({str(exc).removeprefix(f'{name}: ')})") from None
    if any(v not in (0, 1) for v in values):
        raise SettingsError(name, needed)
    return [v == 1 for v in values]
