"""Text prompts: ``"text:weight"`` parsing, style/artist, weight schedules and normalisation.

The grammar lives in ``disco.settings.prompt_text`` (the settings' validator checks prompts with
it before any model loads); this module is the engine's name for it.
"""

from __future__ import annotations

from .settings.prompt_text import (
    PROMPT_KEYS,
    ImagePrompt,
    Prompt,
    build_prompts,
    check_prompts,
    data_uri,
    data_uri_bytes,
    normalised_weights,
    parse_image_prompt,
    parse_prompt,
    prompt_key_at,
    prompt_sets,
    prompt_weight_of,
    step_weights,
)

__all__ = [
    "PROMPT_KEYS",
    "ImagePrompt",
    "Prompt",
    "build_prompts",
    "check_prompts",
    "data_uri",
    "data_uri_bytes",
    "normalised_weights",
    "parse_image_prompt",
    "parse_prompt",
    "prompt_key_at",
    "prompt_sets",
    "prompt_weight_of",
    "step_weights",
]
