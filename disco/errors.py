"""What every reader of settings shares: the error naming a bad setting, the caps a server sets,
and the refusal of numbers that are not finite.

It imports nothing of the project, so every module of ``disco`` may use it: the settings package
reads prompts and key frames through ``disco.prompts`` and ``disco.keyframes``, which raise these
errors themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "Limits", "SettingsError", "finite", "shown"]


class SettingsError(ValueError):
    """A setting is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class Limits:
    """What one request may cost: ``max_pixels`` (width x height), ``max_pixel_steps``
    (width x height x sampled steps, None: no cap) and ``max_prompts`` (prompts in one request: in
    its list, or in each frame's list of a prompt schedule and all of them together). A server
    sets its own (``DISCO_MAX_PIXELS``, ``DISCO_MAX_PIXEL_STEPS``, read by ``disco_service.config``)."""

    max_pixels: int = 2048 * 2048
    max_pixel_steps: int | None = None
    max_prompts: int = 100


DEFAULT_LIMITS = Limits()


def shown(value: Any) -> str:
    """``repr(value)`` for a message; an integer too long to write out (Python refuses more than
    4300 digits) is described by its size instead."""
    try:
        return repr(value)
    except ValueError:
        return f"an integer of {value.bit_length()} bits"


def finite(name: str, value: int | float, where: str = "") -> float:
    """``value`` as a float; raises ``SettingsError`` naming ``name`` when it is inf, NaN or an
    integer too large for a float (``where`` says where in the setting it was, e.g. ``" in '[1e400]*1000'"``)."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SettingsError(name, f"{shown(value)}{where} is not a finite number")
    return number
