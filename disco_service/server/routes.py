"""Every route of the service on the gateway's HTTP port, mounted in one place and order.

The gateway (gateway/page_gateway.py) and the reference table of routes (docs/generate.py) both
build their app here, so the table lists what the gateway serves.
"""

from __future__ import annotations

from disco.settings import Limits
from disco_service.client.cpu_estimate import LONG_RUN_S
from disco_service.server import (
    admin,
    estimates,
    events,
    gallery,
    http_api,
    http_guard,
    hub_serving,
    metrics,
    schedule_preview,
)
from disco_service.server.job_queue import JobQueue
from disco_service.server.tokens import Tokens

__all__ = ["mount_service"]


def mount_service(
    app,
    queue: JobQueue,
    tokens: Tokens,
    limits: Limits,
    use_gpu: str = "auto",
    max_body_bytes: int = http_guard.DEFAULT_MAX_BODY_BYTES,
    confirm_over_s: float | None = None,
) -> events.EventHub:
    """Add the job API with its events, the operator's routes, the gallery's, the estimate, the
    schedules' preview, PaddleHub's route and the metrics to ``app``, behind the guards of
    http_guard.py (bodies of at most ``max_body_bytes``, the security headers); the event hub
    (started and stopped with the app).
    ``confirm_over_s``: with the samplers on the CPU (``use_gpu``), ``POST /jobs`` asks for
    ``?confirm=1`` before a job estimated longer (None or 0: never; estimates.py)."""
    hub = events.EventHub(queue)
    events.mount(app, hub, tokens.is_admin)  # before the job API, whose /jobs/{id} would take /jobs/events
    check = estimates.long_job_check(estimates.device(use_gpu), confirm_over_s)
    http_api.mount(app, queue, tokens, limits, max_body_bytes, check)
    gallery.mount(app, queue)
    estimates.mount(app, queue, limits, use_gpu, confirm_over_s if confirm_over_s is not None else LONG_RUN_S)
    schedule_preview.mount(app, limits)
    admin.mount(app, queue, tokens)
    hub_serving.mount(app, queue, limits)
    metrics.mount(app, queue.state, queue.slots)
    return hub
