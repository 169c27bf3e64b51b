"""Every route of the service on the gateway's HTTP port, mounted in one place and order.

The gateway (gateway/page_gateway.py) and the reference table of routes (docs/generate.py) both
build their app here, so the table lists what the gateway serves.
"""

from __future__ import annotations

from disco.settings import Limits
from disco_service.server import admin, estimates, events, gallery, http_api, http_guard, hub_serving, metrics
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
) -> events.EventHub:
    """Add the job API with its events, the operator's routes, the gallery's, the estimate,
    PaddleHub's route and the metrics to ``app``, behind the guards of http_guard.py (bodies of at most
    ``max_body_bytes``, the security headers); the event hub (started and stopped with the app)."""
    hub = events.EventHub(queue)
    events.mount(app, hub, tokens.is_admin)  # before the job API, whose /jobs/{id} would take /jobs/events
    http_api.mount(app, queue, tokens, limits, max_body_bytes)
    gallery.mount(app, queue)
    estimates.mount(app, queue, limits, use_gpu)
    admin.mount(app, queue, tokens)
    hub_serving.mount(app, queue, limits)
    metrics.mount(app, queue.state, queue.slots)
    return hub
