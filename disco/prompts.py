"""Text prompts: ``"text:weight"`` parsing, style/artist, and weight normalisation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .clip_catalog import DEFAULT_CLIP_MODEL
from .errors import SettingsError

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_NOT_FINITE = re.compile(r"\s*[-+]?(nan|inf|infinity)\s*", re.IGNORECASE)
_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float


def parse_prompt(prompt: str) -> Prompt:
    """Split ``"text:weight"`` at the last colon (not a URL's scheme colon); no weight means 1.

    A suffix that is not a number is part of the text ("a view: dawn" is one prompt).
    """
    head, sep, tail = prompt.rpartition(":")
    if not sep or (head.lower() in ("http", "https") and prompt.lower().startswith(_SCHEMES)):
        return Prompt(prompt.strip(), 1.0)
    overflows = bool(_NUMBER.fullmatch(tail)) and not math.isfinite(float(tail))  # e.g. 1e400
    if _NOT_FINITE.fullmatch(tail) or overflows:
        raise SettingsError("text_prompts", f"the prompt weight {tail.strip()!r} in {prompt!r} is not a finite number")
    if not _NUMBER.fullmatch(tail):
        return Prompt(prompt.strip(), 1.0)
    if not head.strip():
        raise SettingsError("text_prompts", f"prompt {prompt!r} has a weight but no text")
    return Prompt(head.strip(), float(tail))


def build_prompts(text_prompts: list[str], style: str | None = None, artist: str | None = None) -> list[Prompt]:
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
    prompts[0] = Prompt(first, prompts[0].weight)
    return prompts


def check_prompts(
    text_prompts: list[str] | Mapping[int, list[str]],
    style: str | None = None,
    artist: str | None = None,
    tokens: bool = True,
    clip_models: Sequence[str] = (DEFAULT_CLIP_MODEL,),
) -> list[Prompt]:
    """The prompts as CLIP will get them, checked in full: each parses, the weights do not sum
    to 0, and (``tokens``) each text fits the tokenizer of every model in ``clip_models`` (77
    tokens for all offered ones); for ``{frame: [prompts]}`` every frame's list. Returns the
    prompts of frame 0. Raises ``SettingsError`` naming ``text_prompts``."""
    checked = {}
    for frame, texts in prompt_sets(text_prompts).items():
        prompts = build_prompts(texts, style, artist)
        normalised_weights([p.weight for p in prompts])
        if tokens:
            from .clip_model import check_prompt_length  # lazy: open_clip and torch, not needed without tokens

            for model in clip_models:
                for prompt in prompts:
                    check_prompt_length(prompt.text, model)
        checked[frame] = prompts
    return checked[prompt_key_at(checked, 0)]


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
