"""``POST /jobs/estimate``: before a job is sent, how long it would take and what it counts against the quotas.

The body is a job's settings, as for ``POST /jobs``; the answer: ``device`` (``cpu`` or ``gpu``:
where this server's samplers run, from ``DISCO_USE_GPU`` and, for ``auto``, whether the gateway's
host has an NVIDIA device), ``cpu_seconds`` (the CPU estimate of ``client/cpu_estimate.py``: an
order of magnitude on 2 cores), ``notice`` (that estimate in words, with how to make the run small),
``long`` (a CPU server and longer than ``LONG_RUN_S``: the page asks before it sends such a job),
``pixel_steps``, and the caller's ``usage`` today beside the ``quota``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco.settings import Limits, SettingsError, with_video_init_overrides
from disco_service import wire
from disco_service.client.cpu_estimate import LONG_RUN_S, cpu_notice, cpu_seconds_per_step, mean_cutouts
from disco_service.server.http_api import settings_from_json
from disco_service.server.job_queue import JobQueue
from disco_service.server.quotas import job_pixel_steps

__all__ = ["device", "estimate", "mount"]


def device(use_gpu: str) -> str:
    """Where the samplers run: ``gpu`` or ``cpu`` (``DISCO_USE_GPU``: ``1``, ``0`` or ``auto``)."""
    if use_gpu in ("0", "1"):
        return "gpu" if use_gpu == "1" else "cpu"
    return "gpu" if Path("/dev/nvidiactl").exists() else "cpu"


def estimate(settings, where: str) -> dict:
    """The estimate of a job of ``settings`` (``disco.settings.Settings``) where the samplers run on ``where``."""
    animated = settings.animation_mode != "None"
    settings = with_video_init_overrides(settings)  # a video's overrides in place
    per_step = cpu_seconds_per_step(settings.width, settings.height, cutn_batches=1, cutouts=mean_cutouts(settings))
    steps = (settings.steps - settings.skip_steps) * (settings.max_frames if animated else settings.n_batches)
    seconds = per_step * steps
    tags = wire.settings_to_tags(settings)
    images = 1 if animated else settings.n_batches
    notice = None
    if where == "cpu" and not animated:
        notice = cpu_notice(settings, "this server has no GPU")
    elif where == "cpu":
        notice = f"running on the CPU: up to {settings.max_frames} frames, about {seconds / 3600:.1f} h on 2 cores"
    return {
        "device": where,
        "cpu_seconds": round(seconds, 1),
        "notice": notice,
        "long": where == "cpu" and seconds > LONG_RUN_S,
        "images": images,
        "pixel_steps": job_pixel_steps(tags, images),
    }


def mount(app, queue: JobQueue, limits: Limits, use_gpu: str) -> None:
    """Add ``POST /jobs/estimate`` to ``app``."""
    from disco_service.server.http_api import refusal

    where = device(use_gpu)

    async def job_estimate(request: Request):
        """How long a job of these settings would take here, and what it counts against the quotas."""
        try:
            settings, _, _ = settings_from_json(json.loads(await request.body() or b"null"), limits)
        except (SettingsError, ValueError) as exc:
            return refusal(400, wire.failure_of(exc, named=False))
        quota = queue.state.quota
        return {
            **estimate(settings, where),
            "usage": queue.state.usage(request.state.owner),
            "quota": quota.view() if quota is not None else None,
        }

    app.add_api_route("/jobs/estimate", job_estimate, methods=["POST"], tags=["jobs"])
