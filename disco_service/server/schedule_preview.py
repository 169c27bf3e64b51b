"""``POST /schedules/preview``: a setting's value over the 1000 virtual steps, read by the engine's own
schedule grammar (``disco.settings.preview``), so the page can plot a schedule as it is typed.

The body: ``{"setting": NAME, "value": TEXT}``, ``NAME`` one of the settings whose value may be a
schedule (``disco.settings.preview.PREVIEWED_SETTINGS``), ``TEXT`` its value as a job would send it
(for ``text_prompts`` one prompt line, for ``clip_models_schedules`` one ``MODEL=SCHEDULE`` entry), at
most ``MAX_PREVIEW_CHARS`` characters. The answer: ``setting``; ``schedule`` (whether the value is
written as a schedule rather than one number, true/false or weight); ``length`` (1000); ``runs``, the
values at virtual steps 0 to 999 run-length encoded as ``[[value, count], ...]`` (true/false as 1/0);
``low`` and ``high``, the least and greatest value. A value the setting refuses is a 400 with code
``setting_invalid`` naming the setting and saying why, as ``POST /jobs`` would; a body that is not
such an object, or names no such setting, a 400 with code ``request_invalid``.

A prompt of ``text_prompts`` is answered with its ``text`` (without the weight) and ``clip_models``
(the CLIP models it applies to; null: every one) besides. ``text_prompts`` also takes its two JSON
forms as the value (``disco.settings.preview_prompts``): one structured prompt ``{"text": ...,
"weight": ..., "clip_models": [...]}``, answered as a prompt line is; and the prompts by frame
``{"0": [prompts], "100": [...]}``, answered as ``setting`` and ``frames``: for each frame key in
order, ``{"frame", "until", "prompts"}``, ``until`` the frame before the next key (null for the
last), each prompt ``{"text", "clip_models", "schedule", "length", "runs", "low", "high"}``. Such a
value is at most ``MAX_PREVIEW_CHARS`` characters as JSON; a refusal names the prompt (and for the
prompts by frame, the frame).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco.settings import (
    MAX_PREVIEW_CHARS,
    PREVIEWED_SETTINGS,
    Limits,
    PromptPreview,
    SettingsError,
    preview_prompts,
    preview_schedule,
)
from disco.settings.preview import runs
from disco_service import wire
from disco_service.server.http_guard import TookTooLong, off_loop, parse_json

__all__ = ["PREVIEW_BODY", "mount", "preview"]

# The body in the API's description (read by the route itself, so a refusal carries the project's codes)
PREVIEW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["setting", "value"],
                    "properties": {
                        "setting": {"type": "string", "enum": list(PREVIEWED_SETTINGS)},
                        "value": {
                            "type": ["string", "number", "boolean", "object"],
                            "maxLength": MAX_PREVIEW_CHARS,
                            "description": "the value as a job sends it; an object: text_prompts' structured "
                            "prompt or its prompts by frame",
                        },
                    },
                }
            }
        },
    }
}


def preview(body: Any, limits: Limits) -> dict[str, Any]:
    """The answer to a preview request's JSON ``body`` (see the module's text). Raises
    ``SettingsError`` naming the setting for a value it refuses, ``ValueError`` for a body that is
    not ``{"setting": NAME, "value": VALUE}`` with NAME a setting whose value may be a schedule.
    ``limits``: the server's (``max_prompts`` bounds the prompts by frame)."""
    if not isinstance(body, dict) or set(body) != {"setting", "value"}:
        shown = sorted(map(str, body))[:10] if isinstance(body, dict) else type(body).__name__
        raise ValueError(f'the body must be {{"setting": NAME, "value": VALUE}}, got {shown}')
    setting, value = body["setting"], body["value"]
    if not isinstance(setting, str):
        raise ValueError(f"'setting' must be a setting's name, got {type(setting).__name__}")
    if setting not in PREVIEWED_SETTINGS:
        preview_schedule(setting, value, limits)  # raises the ValueError that lists the settings
    if setting == "text_prompts" and isinstance(value, Mapping | str):
        found = preview_prompts(value, limits)
        if isinstance(found, PromptPreview):
            return {"setting": setting, **_prompt_answer(found)}
        frames = [
            {"frame": f.frame, "until": f.until, "prompts": [_prompt_answer(p) for p in f.prompts]} for f in found
        ]
        return {"setting": setting, "frames": frames}
    if not isinstance(value, str | int | float | bool):
        allowed = "; for text_prompts also a structured prompt or prompts by frame" if setting == "text_prompts" else ""
        raise SettingsError(
            setting, f"the value must be text, a number or true/false{allowed}, got {type(value).__name__}"
        )
    found = preview_schedule(setting, value, limits)
    return {"setting": setting, **_values_answer(found.values, found.schedule)}


def _values_answer(values: tuple[float, ...], schedule: bool) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "length": len(values),
        "runs": runs(values),
        "low": min(values),
        "high": max(values),
    }


def _prompt_answer(prompt: PromptPreview) -> dict[str, Any]:
    models = list(prompt.clip_models) if prompt.clip_models is not None else None
    return {"text": prompt.text, "clip_models": models, **_values_answer(prompt.values, prompt.schedule)}


def mount(app, limits: Limits) -> None:
    """Add ``POST /schedules/preview`` to ``app`` (its values read with the server's ``limits``)."""
    from disco_service.server.http_api import refusal

    async def schedule_preview(request: Request):
        """A setting's value (one prompt line, a cut schedule, a scale...) at each of the 1000 virtual steps."""
        try:  # off the event loop: reading a large body takes a while
            body = await off_loop(parse_json, await request.body())
            return await off_loop(preview, body, limits)
        except (SettingsError, ValueError) as exc:
            return refusal(400, wire.failure_of(exc, named=False))
        except TookTooLong as exc:
            return refusal(413, wire.failure_of(exc, named=False))

    app.add_api_route(
        "/schedules/preview", schedule_preview, methods=["POST"], tags=["settings"], openapi_extra=PREVIEW_BODY
    )
