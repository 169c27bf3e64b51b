"""Text prompts: ``"text:weight"`` parsing, style/artist, weight schedules and normalisation.

A prompt's weight may be one number or, as in discoart (0.8 and later), a schedule over the 1000
virtual steps in the cut schedules' grammar (``"a lighthouse:[1]*500+[0]*500"``); the structured
form ``{"text": ..., "weight": ..., "clip_models": [...]}`` also restricts a prompt to some of the
chosen CLIP models. At each step, each CLIP model judges the image against the prompts that apply
to it there (weight not 0, the model among the prompt's), their weights divided by their absolute
sum (``step_weights``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..clip_catalog import DEFAULT_CLIP_MODEL
from ..errors import SettingsError
from .schedules import parse_schedule
from .texts import SCHEDULE_LENGTH

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_NOT_FINITE = re.compile(r"\s*[-+]?(nan|inf|infinity)\s*", re.IGNORECASE)
_SCHEMES = ("http://", "https://")
# a weight written as a schedule: ``[...]`` terms, each maybe ``*n``, joined by ``+`` (checked in full by
# parse_schedule); a lone ``[word]`` without ``*`` or ``+`` is text ("a view:[draft]")
_TERMS = re.compile(r"\s*\[[^\[\]:]*\]\s*(\*\s*\d+)?\s*(\+\s*\[[^\[\]:]*\]\s*(\*\s*\d+)?\s*)*")
_NUMBERS = re.compile(r"\s*\[[-+\d\s.,eE]*\]\s*")


def _looks_like_schedule(tail: str) -> bool:
    return bool(_TERMS.fullmatch(tail)) and ("*" in tail or "+" in tail or bool(_NUMBERS.fullmatch(tail)))


PROMPT_KEYS = ("text", "weight", "clip_models")  # the structured form's keys


@dataclass(frozen=True)
class Prompt:
    """One prompt as CLIP gets it. ``weight``: its weight (for a schedule, the value at the first
    virtual step); ``schedule``: the weight at each of the 1000 virtual steps when it was given as a
    schedule, written as ``schedule_text``; ``clip_models``: the only CLIP models that judge the
    image against it (None: every one of the setting ``clip_models``)."""

    text: str
    weight: float
    schedule: tuple[float, ...] | None = None
    schedule_text: str | None = None
    clip_models: tuple[str, ...] | None = None

    @property
    def plain(self) -> bool:
        """One weight for the whole run, for every CLIP model (the form before schedules)."""
        return self.schedule is None and self.clip_models is None

    def weights(self) -> np.ndarray:
        """Its weight at each virtual step: ``(1000,)`` float64."""
        if self.schedule is None:
            return np.full(SCHEDULE_LENGTH, self.weight)
        return np.asarray(self.schedule, dtype=np.float64)

    def applies_to(self, model: str) -> bool:
        """Whether CLIP model ``model`` judges the image against this prompt."""
        return self.clip_models is None or model in self.clip_models

    def wire_weight(self) -> float | dict[str, Any]:
        """Its weight as the encoder hands it on: the number for a plain prompt (the form before
        schedules), else ``{"weight": number or schedule text, "clip_models": [...] or None}``
        (``prompt_weight_of`` reads either back)."""
        if self.plain:
            return self.weight
        weight = self.schedule_text if self.schedule is not None else self.weight
        return {"weight": weight, "clip_models": list(self.clip_models) if self.clip_models is not None else None}


def _weight_schedule(prompt: str, text: str, value: Any) -> tuple[float, tuple[float, ...] | None, str | None]:
    """A weight given as a number or schedule text: (first value, the schedule or None, its text)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            values = parse_schedule("text_prompts", value)
        except SettingsError as exc:
            problem = str(exc).removeprefix("text_prompts: ")
            raise SettingsError("text_prompts", f"prompt {text!r}: its weight schedule: {problem}") from None
        return values[0], tuple(values), value.strip()
    if isinstance(value, bool):  # Jina's HTTP gateway reads a 1 or 0 as true or false
        value = int(value)
    if not isinstance(value, int | float | str):
        raise SettingsError(
            "text_prompts", f"prompt {prompt!r}: its weight must be a number or a schedule, got {value!r}"
        )
    try:
        weight = float(value)
    except ValueError:
        raise SettingsError(
            "text_prompts", f"prompt {prompt!r}: its weight must be a number or a schedule, got {value!r}"
        ) from None
    if not math.isfinite(weight):
        raise SettingsError("text_prompts", f"the prompt weight {value!r} in {prompt!r} is not a finite number")
    return weight, None, None


def parse_prompt(prompt: str | Mapping[str, Any]) -> Prompt:
    """Split ``"text:weight"`` at the last colon (not a URL's scheme colon); no weight means 1.

    A suffix that is not a number or a schedule (``[1]*500+[0]*500``) is part of the text ("a view:
    dawn" is one prompt). A mapping is the structured form: ``text``, optional ``weight`` (a number
    or schedule text; not also given after the text's colon) and ``clip_models`` (names). Raises
    ``SettingsError`` naming ``text_prompts`` and the prompt.
    """
    if isinstance(prompt, Mapping):
        return _structured(prompt)
    head, sep, tail = prompt.rpartition(":")
    if not sep or (head.lower() in ("http", "https") and prompt.lower().startswith(_SCHEMES)):
        return Prompt(prompt.strip(), 1.0)
    if _looks_like_schedule(tail):
        if not head.strip():
            raise SettingsError("text_prompts", f"prompt {prompt!r} has a weight schedule but no text")
        weight, schedule, text = _weight_schedule(prompt, head.strip(), tail)
        return Prompt(head.strip(), weight, schedule, text)
    overflows = bool(_NUMBER.fullmatch(tail)) and not math.isfinite(float(tail))  # e.g. 1e400
    if _NOT_FINITE.fullmatch(tail) or overflows:
        raise SettingsError("text_prompts", f"the prompt weight {tail.strip()!r} in {prompt!r} is not a finite number")
    if not _NUMBER.fullmatch(tail):
        return Prompt(prompt.strip(), 1.0)
    if not head.strip():
        raise SettingsError("text_prompts", f"prompt {prompt!r} has a weight but no text")
    return Prompt(head.strip(), float(tail))


def structured_text(prompt: Mapping[str, Any]) -> str:
    """The text of a structured prompt, after checking its keys are ``PROMPT_KEYS`` and its text is
    not empty; raises ``SettingsError`` (``text_prompts``) naming the prompt otherwise."""
    unknown = [k for k in prompt if k not in PROMPT_KEYS]
    if unknown:
        raise SettingsError(
            "text_prompts", f"prompt {dict(prompt)!r}: unknown key {unknown[0]!r}; allowed: {', '.join(PROMPT_KEYS)}"
        )
    text = prompt.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SettingsError("text_prompts", f"prompt {dict(prompt)!r}: 'text' must be non-empty text")
    return text


def _structured(prompt: Mapping[str, Any]) -> Prompt:
    """``{"text": ..., "weight": ..., "clip_models": [...]}`` (discoart's prompt schema's fields)."""
    text = structured_text(prompt)
    parsed = parse_prompt(text)
    if "weight" in prompt and prompt["weight"] is not None:
        if parsed.text != text.strip():
            raise SettingsError(
                "text_prompts",
                f"prompt {text!r}: the weight is given twice (after the text's colon and as 'weight'); give it once",
            )
        weight, schedule, schedule_text = _weight_schedule(text, parsed.text, prompt["weight"])
        parsed = Prompt(parsed.text, weight, schedule, schedule_text)
    models = prompt.get("clip_models")
    if models is None:
        return parsed
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list | tuple) or not models or not all(isinstance(m, str) for m in models):
        raise SettingsError(
            "text_prompts", f"prompt {parsed.text!r}: 'clip_models' must be a non-empty list of names, got {models!r}"
        )
    return Prompt(parsed.text, parsed.weight, parsed.schedule, parsed.schedule_text, tuple(models))


def prompt_weight_of(text: str, wire_weight: Any) -> Prompt:
    """A prompt from its text and the weight ``Prompt.wire_weight`` gave (a number or a mapping)."""
    if isinstance(wire_weight, Mapping):
        return _structured({"text": text, **wire_weight})
    return Prompt(text, float(wire_weight))


def build_prompts(
    text_prompts: Sequence[str | Mapping[str, Any]], style: str | None = None, artist: str | None = None
) -> list[Prompt]:
    """Parse every prompt; ``style`` and ``artist`` extend the first prompt's text as the PaddleHub
    module does (its ``generate_image``): trailing ``,.，。`` stripped, then ``",{style}"`` and
    ``",{artist},trending on artstation"`` appended. The ``:weight`` suffix never reaches the text."""
    prompts = [parse_prompt(p) for p in text_prompts]
    first = prompts[0].text
    if style or artist:
        first = first.rstrip(",.，。")
    if style:
        first += f",{style}"
    if artist:
        first += f",{artist},trending on artstation"
    p = prompts[0]
    prompts[0] = Prompt(first, p.weight, p.schedule, p.schedule_text, p.clip_models)
    return prompts


def check_prompts(
    text_prompts: list[str] | Mapping[int, list[str]],
    style: str | None = None,
    artist: str | None = None,
    tokens: bool = True,
    clip_models: Sequence[str] = (DEFAULT_CLIP_MODEL,),
    clip_models_schedules: Mapping[str, Sequence[bool]] | None = None,
    truncate: bool = False,
    image_weights: Sequence[float] = (),
) -> list[Prompt]:
    """The prompts as CLIP will get them, checked in full: each parses, names only models of
    ``clip_models``, the weights that apply to a model at a step do not sum to 0 (``step_weights``),
    and (``tokens``, unless ``truncate``) each text fits the tokenizer of every model in
    ``clip_models`` (77 tokens for all offered ones); for ``{frame: [prompts]}`` every frame's list.
    ``image_weights``: the weights of ``image_prompts``, weighed beside every frame's prompts.
    Returns the prompts of frame 0. Raises ``SettingsError`` naming ``text_prompts``."""
    images = [Prompt(f"image prompt {i}", w) for i, w in enumerate(image_weights)]
    checked = {}
    for frame, texts in prompt_sets(text_prompts).items():
        prompts = build_prompts(texts, style, artist)
        for prompt in prompts:
            unknown = [m for m in prompt.clip_models or () if m not in clip_models]
            if unknown:
                raise SettingsError(
                    "text_prompts",
                    f"prompt {prompt.text!r} names CLIP model {unknown[0]!r}, which is not one of clip_models "
                    f"({', '.join(clip_models)})",
                )
        if all(p.plain for p in prompts):
            normalised_weights([p.weight for p in prompts + images])
        else:
            for model in clip_models:
                step_weights(prompts + images, model, (clip_models_schedules or {}).get(model))
        if tokens and not truncate:
            from ..clip_model import check_prompt_length  # lazy: open_clip and torch, not needed without tokens

            for model in clip_models:
                for prompt in prompts:
                    check_prompt_length(prompt.text, model)
        checked[frame] = prompts
    return checked[prompt_key_at(checked, 0)]


def step_weights(
    prompts: Sequence[Prompt], model: str, model_schedule: Sequence[bool] | None = None, fuzzy_copies: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """What CLIP model ``model`` weighs at each virtual step: ``(weights, active)``, ``weights``
    ``(1000, len(prompts) * fuzzy_copies)`` float64 with 0 where a prompt does not apply (its weight
    is 0 there, or it names other models) and the others divided by their absolute sum (as
    ``normalised_weights``, a fuzzy prompt's copies counted each); ``active`` ``(1000,)`` bool: the
    model judges at that step (``model_schedule`` has it on and some prompt applies). Raises
    ``SettingsError`` naming ``text_prompts`` where the weights that apply sum to 0."""
    table = np.stack([p.weights() if p.applies_to(model) else np.zeros(SCHEDULE_LENGTH) for p in prompts], axis=1)
    table = np.repeat(table, fuzzy_copies, axis=1)
    on = np.ones(SCHEDULE_LENGTH, dtype=bool) if model_schedule is None else np.asarray(model_schedule, dtype=bool)
    applies = table != 0
    active = on & applies.any(axis=1)
    totals = np.zeros(SCHEDULE_LENGTH)
    for column in table.T:  # left to right, as ``normalised_weights`` sums: the same weights to the last bit
        totals = totals + column
    bad = np.flatnonzero(applies.any(axis=1) & ~(np.abs(totals) >= 1e-3))
    if bad.size:
        at = int(bad[0])
        row = [float(w) for w in table[at, ::fuzzy_copies]]
        raise SettingsError(
            "text_prompts",
            f"the prompt weights that apply to {model} at virtual step {at} ({row}) sum to {totals[at]:g}; "
            "they must not sum to 0",
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(applies, table / np.abs(totals)[:, None], 0.0)
    return weights, active


def prompt_sets(text_prompts: list[str] | Mapping[int, list[str]]) -> dict[int, list[str]]:
    """The prompts by the frame they start at: a plain list starts at frame 0 and holds for every frame."""
    if isinstance(text_prompts, Mapping):
        return {int(frame): list(texts) for frame, texts in sorted(text_prompts.items(), key=lambda kv: int(kv[0]))}
    return {0: list(text_prompts)}


def prompt_key_at(sets: Mapping[int, object], frame: int) -> int:
    """The key of the prompts that apply at ``frame``: the latest key at or before it; frames before
    the first key take the first key's prompts (the notebook fills its prompt series forwards, then
    backwards)."""
    keys = sorted(int(k) for k in sets)
    earlier = [k for k in keys if k <= frame]
    return earlier[-1] if earlier else keys[0]


def normalised_weights(weights: list[float]) -> list[float]:
    """Divide by the absolute sum (negative weights allowed); a sum near zero is refused."""
    total = sum(weights)
    if not math.isfinite(total):
        raise SettingsError("text_prompts", f"prompt weights {weights} sum to {total}, not a finite number")
    if abs(total) < 1e-3:
        raise SettingsError("text_prompts", f"prompt weights must not sum to 0, got {weights} (sum {total:g})")
    return [w / abs(total) for w in weights]


DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,([A-Za-z0-9+/=\s]*)", re.DOTALL)


@dataclass(frozen=True)
class ImagePrompt:
    """One of ``image_prompts``: the image (a path, URL or data URI as text, or its bytes) and its weight."""

    source: str | bytes
    weight: float = 1.0


def parse_image_prompt(prompt: str | bytes) -> ImagePrompt:
    """``"path:weight"`` (the notebook's form; also a data URI with ``:weight`` after it), or image
    bytes (weight 1). Raises ``SettingsError`` naming ``image_prompts``."""
    if isinstance(prompt, bytes | bytearray):
        if not prompt:
            raise SettingsError("image_prompts", "an image prompt's bytes are empty")
        return ImagePrompt(bytes(prompt), 1.0)
    if not isinstance(prompt, str) or not prompt.strip():
        raise SettingsError("image_prompts", f"each image prompt must be a path, bytes or a data URI, got {prompt!r}")
    head, sep, tail = prompt.rpartition(":")
    if not sep or not _NUMBER.fullmatch(tail) or head.lower() in ("http", "https", "data", ""):
        return ImagePrompt(prompt.strip(), 1.0)
    weight = float(tail)
    if not math.isfinite(weight):
        raise SettingsError("image_prompts", f"the weight {tail.strip()!r} of {_short(prompt)} is not a finite number")
    return ImagePrompt(head.strip(), weight)


def data_uri_bytes(source: str) -> bytes | None:
    """The bytes of a base64 ``data:`` URI, or None when ``source`` is not one. Raises
    ``SettingsError`` naming ``image_prompts`` for a data URI whose base64 is broken."""
    match = DATA_URI.fullmatch(source.strip())
    if not match:
        return None
    try:
        return base64.b64decode("".join(match.group(3).split()), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError("image_prompts", f"the data URI {_short(source)} is not valid base64") from None


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data`` as a base64 ``data:`` URI (how a client sends an image prompt's bytes)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
