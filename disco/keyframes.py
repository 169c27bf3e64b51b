"""Key frames of the 2D motion settings (``angle``, ``zoom``, ``translation_x``, ``translation_y``).

The Disco Diffusion notebook's syntax: ``"0: (1), 10: (1.05)"`` gives a value at some frames, and
every other frame's value is interpolated linearly between its neighbouring key frames (frames
before the first key take its value, frames after the last key keep the last one; the notebook's
``get_inbetweens`` with ``interp_spline = 'Linear'``). A bare value (``"1.05"``) is the value of
every frame, as the notebook reads a string without key frames (``"0: (1.05)"``).

A value may be an expression of ``t``, the frame number: ``"0: (1+0.002*sin(t/10))"``. As in the
notebooks that added expressions (Deforum's ``numexpr`` evaluation), such a key sets every frame from
it up to the next key, each evaluated at its own ``t``; numeric keys are interpolated as above.
Expressions are read by a small evaluator over Python's ``ast`` that knows only numbers, ``t``,
``pi``, ``e``, ``+ - * / % **``, parentheses and the functions in ``FUNCTIONS``: nothing is ever
``eval``'d, and anything else is refused with an error naming the setting.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import SettingsError

FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {  # name: (function, number of arguments)
    "sin": (math.sin, 1),
    "cos": (math.cos, 1),
    "tan": (math.tan, 1),
    "asin": (math.asin, 1),
    "acos": (math.acos, 1),
    "atan": (math.atan, 1),
    "sinh": (math.sinh, 1),
    "cosh": (math.cosh, 1),
    "tanh": (math.tanh, 1),
    "exp": (math.exp, 1),
    "log": (math.log, 1),
    "log10": (math.log10, 1),
    "sqrt": (math.sqrt, 1),
    "abs": (abs, 1),
    "floor": (math.floor, 1),
    "ceil": (math.ceil, 1),
    "min": (min, None),
    "max": (max, None),
}
CONSTANTS = {"pi": math.pi, "e": math.e}
ALLOWED = "numbers, t, pi, e, + - * / % **, parentheses and " + ", ".join(FUNCTIONS)
MAX_TEXT = 10_000  # characters of one setting's key frames

_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: math.pow,  # a domain error instead of a complex number for (-8) ** (1 / 3)
}
_SIGNS: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_KEY = re.compile(r"\s*(\d{1,9})\s*:\s*\(")
_SEPARATOR = re.compile(r"\s*(,\s*|$)")
_STARTS_WITH_KEY = re.compile(r"\s*\d+\s*:")


@dataclass(frozen=True)
class Expression:
    """One key frame's value: ``value(t)`` evaluates it at frame ``t``; ``uses_t`` whether it depends on ``t``."""

    text: str
    evaluate: Callable[[float], float]
    uses_t: bool

    def value(self, name: str, t: int) -> float:
        """The value at frame ``t`` as a finite float; raises ``SettingsError`` naming ``name`` otherwise."""
        try:
            result = float(self.evaluate(float(t)))
        except OverflowError:
            raise SettingsError(name, f"{self.text!r} is not a finite number at frame {t} (it overflows)") from None
        except (ArithmeticError, ValueError) as exc:  # division by zero, overflow, math domain errors
            raise SettingsError(name, f"{self.text!r} cannot be computed at frame {t}: {exc}") from None
        except RecursionError:
            raise SettingsError(name, f"{self.text[:40]!r}... is nested too deeply") from None
        if not math.isfinite(result):
            raise SettingsError(name, f"{self.text!r} is not a finite number at frame {t} (got {result})")
        return result


def compile_expression(name: str, text: str) -> Expression:
    """``text`` as an ``Expression``; raises ``SettingsError`` naming ``name`` for anything but ``ALLOWED``."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise SettingsError(name, f"cannot read {text!r} as a number or an expression of t ({exc})") from None
    uses_t = False

    def build(node: ast.AST) -> Callable[[float], float]:
        nonlocal uses_t
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            try:
                number = float(node.value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise SettingsError(name, f"a number in {text!r} is not a finite number (it overflows)")
            return lambda t: number
        if isinstance(node, ast.Name) and node.id == "t":
            uses_t = True
            return lambda t: t
        if isinstance(node, ast.Name) and node.id.lower() in ("nan", "inf", "infinity"):
            raise SettingsError(name, f"{node.id} in {text!r} is not a finite number")
        if isinstance(node, ast.Name) and node.id in CONSTANTS:
            constant = CONSTANTS[node.id]
            return lambda t: constant
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            op, left, right = _OPERATORS[type(node.op)], build(node.left), build(node.right)
            return lambda t: op(left(t), right(t))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _SIGNS:
            sign, operand = _SIGNS[type(node.op)], build(node.operand)
            return lambda t: sign(operand(t))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            function, arity = FUNCTIONS[node.func.id]
            if node.keywords or (arity is not None and len(node.args) != arity) or not node.args:
                count = f"{arity} argument" if arity else "one or more arguments"
                raise SettingsError(name, f"{node.func.id}() takes {count}, in {text!r}")
            args = [build(a) for a in node.args]
            return lambda t: function(*(a(t) for a in args))
        raise SettingsError(name, f"{_describe(node)} is not allowed in {text!r}; allowed: {ALLOWED}")

    try:
        evaluate = build(tree.body)
    except RecursionError:
        raise SettingsError(name, f"{text[:40]!r}... is nested too deeply") from None
    return Expression(text.strip(), evaluate, uses_t)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return f"the function {node.func.id!r}"
    if isinstance(node, ast.Constant):
        return f"the value {node.value!r}"
    return f"{type(node).__name__} ({ast.unparse(node)[:40]!r})"


def parse_key_frames(name: str, text: str) -> dict[int, str]:
    """``"0: (1), 10: (1.05)"`` as ``{0: "1", 10: "1.05"}``; a value without key frames is frame 0's.

    Parentheses inside a value may nest (``"0: (1+0.002*sin(t/10))"``). Raises ``SettingsError``
    naming ``name`` for text that does not follow the syntax or gives a frame twice.
    """
    if not isinstance(text, str):
        raise SettingsError(name, f"must be key frames as text such as '0: (1), 10: (1.05)', got {text!r}")
    if len(text) > MAX_TEXT:
        raise SettingsError(name, f"is {len(text)} characters long; at most {MAX_TEXT} are allowed")
    if not text.strip():
        raise SettingsError(name, "is empty; write key frames such as '0: (1), 10: (1.05)' or one number")
    if not _STARTS_WITH_KEY.match(text):
        return {0: text.strip()}
    frames: dict[int, str] = {}
    at = 0
    while True:
        key = _KEY.match(text, at)
        if not key:
            raise SettingsError(
                name, f"expected 'frame: (value)' at character {at + 1} of {text!r}; write e.g. '0: (1), 10: (1.05)'"
            )
        depth, i = 1, key.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if depth:
            raise SettingsError(name, f"the value of frame {key.group(1)} has no closing ')' in {text!r}")
        frame, value = int(key.group(1)), text[key.end() : i - 1].strip()
        if frame in frames:
            raise SettingsError(name, f"frame {frame} is given twice in {text!r}")
        if not value:
            raise SettingsError(name, f"frame {frame} has no value in {text!r}")
        frames[frame] = value
        separator = _SEPARATOR.match(text, i)
        if not separator or (separator.group(1) == "" and separator.end() != len(text)):
            raise SettingsError(name, f"expected ',' after frame {frame}'s value at character {i + 1} of {text!r}")
        at = separator.end()
        if at >= len(text) or not text[at:].strip():
            return frames


def parse_keyframe_values(name: str, text: str) -> dict[int, Expression]:
    """The key frames with each value read as an ``Expression`` (checked, not yet evaluated)."""
    return {frame: compile_expression(name, value) for frame, value in parse_key_frames(name, text).items()}


def keyframe_series(name: str, text: str, frames: int) -> list[float]:
    """The value of every frame ``0 .. frames - 1`` (see the module's docstring for the rule)."""
    keys = parse_keyframe_values(name, text)
    order = sorted(keys)
    xs: list[float] = []
    ys: list[float] = []
    for k, frame in enumerate(order):
        expression = keys[frame]
        if expression.uses_t:
            end = min(order[k + 1] if k + 1 < len(order) else frames, frames)
            span = range(frame, max(end, frame + 1))  # a key past the last frame still anchors the line
        else:
            span = range(frame, frame + 1)
        for t in span:
            xs.append(t)
            ys.append(expression.value(name, t))
    return [float(v) for v in np.interp(np.arange(frames), xs, ys)]
