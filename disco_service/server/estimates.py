"""``POST /jobs/estimate``: before a job is sent, how long it would take and what it counts against the quotas.

The body is a job's settings, as for ``POST /jobs``; the answer: ``device`` (``cpu`` or ``gpu``:
where this server's samplers run, from ``DISCO_USE_GPU`` and, for ``auto``, whether the gateway's
host has an NVIDIA device), ``cpu_seconds`` (the CPU estimate of ``client/cpu_estimate.py``: an
order of magnitude on 2 cores), ``notice`` (that estimate in words, with how to make the run small),
``long`` (a CPU server and longer than ``DISCO_CONFIRM_OVER_S``: the page asks before it sends such
a job), ``confirm_over_s`` (that limit; null: never asks), ``pixel_steps``, and the caller's
``usage`` today beside the ``quota``.

A server without GPU also guards the job API itself: ``POST /jobs`` refuses a job estimated to
run longer than ``DISCO_CONFIRM_OVER_S`` (409, code ``confirm_required``, the message naming the
estimate and the limit) unless it is sent with ``?confirm=1``. And its page starts from small
settings (``CPU_DEFAULTS``, as ``client.py`` advises on a CPU): ``page_rows`` puts them in place of
the settings' defaults in the form's rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco.animation_plan import plan_run
from disco.settings import Limits, SettingsError, with_video_init_overrides
from disco.video import video_info
from disco_service import wire
from disco_service.client.cpu_estimate import (
    LONG_RUN_S,
    cpu_notice,
    cpu_seconds_per_step,
    duration,
    mean_cutouts,
)
from disco_service.server.http_api import settings_from_json
from disco_service.server.job_queue import JobQueue
from disco_service.server.quotas import LongJob, job_pixel_steps

__all__ = ["CPU_DEFAULTS", "device", "estimate", "long_job_check", "mount", "page_rows"]

# The page's starting settings on a server without GPU: one small image (client/cpu_estimate.py's SMALL_RUN),
# minutes on 2 cores where the settings' own defaults take hours.
CPU_DEFAULTS: dict[str, Any] = {"width_height": [256, 256], "steps": 50, "cutn_batches": 1, "n_batches": 1}


def device(use_gpu: str) -> str:
    """Where the samplers run: ``gpu`` or ``cpu`` (``DISCO_USE_GPU``: ``1``, ``0`` or ``auto``)."""
    if use_gpu in ("0", "1"):
        return "gpu" if use_gpu == "1" else "cpu"
    return "gpu" if Path("/dev/nvidiactl").exists() else "cpu"


def page_rows(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """The form's rows (``disco.settings.settings_schema``) with ``CPU_DEFAULTS`` as the defaults
    where the samplers run on the CPU (``where``: ``cpu`` or ``gpu``; a GPU keeps the settings' own)."""
    if where != "cpu":
        return rows
    return [{**row, "default": CPU_DEFAULTS[row["name"]]} if row["name"] in CPU_DEFAULTS else row for row in rows]


def long_job_check(where: str, confirm_over_s: float | None) -> Callable[..., None] | None:
    """What ``POST /jobs`` asks of a job on this server (``http_api.mount``'s ``check_job``): with
    the samplers on the CPU and ``confirm_over_s`` set (not 0), a job of ``settings`` (and, for
    Video Input, its ``video`` bytes) estimated to take longer raises ``LongJob`` naming the estimate
    and the limit, unless ``confirmed``. None where nothing is asked (a GPU, or no limit)."""
    if where != "cpu" or not confirm_over_s:
        return None

    def check(settings, confirmed: bool, video: bytes | None = None) -> None:
        seconds = estimate(settings, where, confirm_over_s, video)["cpu_seconds"]
        if seconds > confirm_over_s and not confirmed:
            raise LongJob(
                f"this job would take about {duration(seconds)} ({seconds:.0f} s) on this server, which has "
                f"no GPU; it asks before accepting a job over {duration(confirm_over_s)} "
                f"(DISCO_CONFIRM_OVER_S={confirm_over_s:g}): send it again with ?confirm=1, or make it smaller "
                f"(e.g. {_small()})"
            )

    return check


def _small() -> str:
    return ", ".join(f"{name} {value}" for name, value in CPU_DEFAULTS.items())


def estimate(settings, where: str, confirm_over_s: float | None = LONG_RUN_S, video: bytes | None = None) -> dict:
    """The estimate of a job of ``settings`` (``disco.settings.Settings``) where the samplers run on
    ``where``; ``long``: on the CPU and over ``confirm_over_s`` seconds (None or 0: never). An
    animation's steps are its plan's (``disco.animation_plan``: later frames skip
    ``frames_skip_steps``, turbo's warped frames take none), Video Input's frames those of ``video``
    (its bytes; without them, up to ``max_frames``)."""
    animated = settings.animation_mode != "None"
    settings = with_video_init_overrides(settings)  # a video's overrides in place
    per_step = cpu_seconds_per_step(settings.width, settings.height, cutn_batches=1, cutouts=mean_cutouts(settings))
    seconds = per_step * _sampled_steps(settings, video) * settings.batch_size  # a batch's images share its steps
    tags = wire.settings_to_tags(settings)
    images = 1 if animated else settings.n_batches * settings.batch_size
    notice = None
    if where == "cpu" and not animated:
        notice = cpu_notice(settings, "this server has no GPU")
    elif where == "cpu":
        notice = f"running on the CPU: up to {settings.max_frames} frames, about {seconds / 3600:.1f} h on 2 cores"
    return {
        "device": where,
        "cpu_seconds": round(seconds, 1),
        "notice": notice,
        "long": where == "cpu" and bool(confirm_over_s) and seconds > confirm_over_s,
        "confirm_over_s": confirm_over_s or None,
        "images": images,
        "pixel_steps": job_pixel_steps(tags, 1 if animated else settings.n_batches),
    }


def _sampled_steps(settings, video: bytes | None) -> int:
    """Diffusion steps of a job of ``settings``: each image's, or the animation plan's over its frames."""
    if settings.animation_mode == "None":  # each image's steps, GoBig's tiles included
        return plan_run(settings).run_steps * settings.n_batches
    if settings.animation_mode == "Video Input":
        if video is None:  # its length is not known: as many frames as it may have
            return (settings.steps - settings.skip_steps) * settings.max_frames
        return plan_run(settings, video=video_info(video)).run_steps
    return plan_run(settings).run_steps


def mount(app, queue: JobQueue, limits: Limits, use_gpu: str, confirm_over_s: float | None = LONG_RUN_S) -> None:
    """Add ``POST /jobs/estimate`` to ``app`` (``long``: over ``confirm_over_s`` seconds on a CPU)."""
    from disco_service.server.http_api import refusal

    where = device(use_gpu)

    async def job_estimate(request: Request):
        """How long a job of these settings would take here, and what it counts against the quotas."""
        try:
            settings, _, video = settings_from_json(json.loads(await request.body() or b"null"), limits)
        except (SettingsError, ValueError) as exc:
            return refusal(400, wire.failure_of(exc, named=False))
        quota = queue.state.quota
        return {
            **estimate(settings, where, confirm_over_s, video),
            "usage": queue.state.usage(request.state.owner),
            "quota": quota.view() if quota is not None else None,
        }

    app.add_api_route("/jobs/estimate", job_estimate, methods=["POST"], tags=["jobs"])
