"""Readers of one plain value (a whole number, a number, true/false, a choice, optional text):
strict, but tolerant of floats that carry whole numbers and of numbers that carry true/false, as
gRPC's Struct sends them. Each raises ``SettingsError`` naming the setting."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import SettingsError, finite, shown


def _bounds(name: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(name, f"must be in [{low}, {high if high is not None else 'inf'}], got {shown(value)}")


def read_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """A whole number in [low, high] (None: open); a float that is whole (``3.0``) also does."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(name, f"must be an integer, got {value!r}")
    if isinstance(value, float):
        finite(name, value)
        if not value.is_integer():
            raise SettingsError(name, f"must be an integer, got {value!r}")
        value = int(value)
    _bounds(name, value, low, high)
    return value


def read_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A finite number in [low, high] (None: open), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(name, f"must be a number, got {value!r}")
    number = finite(name, value)
    _bounds(name, number, low, high)
    return number


def read_bool(name: str, value: Any) -> bool:
    """True or false; 0 and 1 also do (gRPC's Struct turns booleans into numbers)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        finite(name, value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise SettingsError(name, f"must be true or false, got {value!r}")


def read_choice(name: str, value: Any, allowed: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str:
    """One of ``allowed``, in any case, or an alias of one."""
    if isinstance(value, str):
        value = (aliases or {}).get(value.lower(), value.lower())
        if value in allowed:
            return value
    raise SettingsError(name, f"must be one of {list(allowed)}, got {value!r}")


def read_optional_text(name: str, value: Any) -> str | None:
    """Text, or None (empty text is None)."""
    if value is None or isinstance(value, str):
        return value or None
    raise SettingsError(name, f"must be text or None, got {value!r}")
