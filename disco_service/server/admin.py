"""The operator's routes (``DISCO_ADMIN_TOKENS``; anyone on a service without tokens), under ``/admin/``.

- ``GET /admin/jobs``: every token's jobs, newest first, each with its ``owner`` (``before``, ``limit``).
- ``DELETE /admin/jobs/{id}``: cancel any job (queued images at once, running ones at their next step).
- ``GET /admin/queue``: the switches (``paused``, ``draining``), images queued and in flight, the quotas.
- ``POST /admin/pause``: no image is sent to the samplers (those running finish); jobs are still accepted.
- ``POST /admin/drain``: no job is accepted either (503 with ``Retry-After``); what is queued still runs.
- ``POST /admin/resume``: both switches off.
- ``GET /admin/tokens``, ``POST /admin/tokens`` (``{"token", "label"}``; no token: a new one,
  shown once), ``DELETE /admin/tokens/{token or owner}``: the state store's tokens, counted at
  the next request.

The switches live in the state store, so they hold for every gateway that shares it.
"""

from __future__ import annotations

import json
import secrets

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco_service.server.http_api import ApiError, job_view
from disco_service.server.job_queue import JobQueue
from disco_service.server.tokens import Tokens
from disco_service.wire import ErrorCode

__all__ = ["mount"]


def mount(app, queue: JobQueue, tokens: Tokens) -> None:
    """Add the operator's routes to ``app``."""

    def operator(request: Request) -> None:
        if not tokens.is_admin(request.state.owner):
            raise ApiError(
                403, ErrorCode.ADMIN_REQUIRED, "this route is the operator's: use a token of DISCO_ADMIN_TOKENS"
            )

    def queue_view() -> dict:
        state = queue.state
        quota = state.quota.view() if state.quota is not None else None
        return {**state.switches(), "queued": len(state.queue()), "in_flight": state.in_flight(), "slots": queue.slots,
                "quota": quota}  # fmt: skip

    async def all_jobs(request: Request, before: float | None = None, limit: int = 50):
        """Every token's jobs, newest first, each with its owner."""
        operator(request)
        jobs = queue.jobs_of(None, before=before, limit=max(1, min(limit, 500)))
        return {
            "jobs": [{**job_view(queue, job), "owner": job.owner} for job in jobs],
            "next_before": jobs[-1].created if len(jobs) == limit else None,
        }

    async def cancel_any(job_id: str, request: Request):
        """Cancel any token's job."""
        operator(request)
        stored = queue.state.get_job(job_id)
        if stored is None:
            raise ApiError(404, ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r}")
        job = await queue.cancel(stored.owner, job_id)
        return {**job_view(queue, job), "owner": job.owner}

    async def show_queue(request: Request):
        """The queue's switches, its images queued and in flight, the quotas."""
        operator(request)
        return queue_view()

    def flip(request: Request, **values: bool) -> dict:
        operator(request)
        queue.state.set_switches(**values)
        queue._poke()  # resumed: claim at once rather than at the next round
        return queue_view()

    async def pause(request: Request):
        """Pause the queue for every gateway: no image is sent; those running finish; jobs are still accepted."""
        return flip(request, paused=True)

    async def drain(request: Request):
        """Drain: no new job is accepted (503 with Retry-After); what is queued still runs."""
        return flip(request, draining=True)

    async def resume(request: Request):
        """Resume: images are sent again and jobs accepted (both switches off)."""
        return flip(request, paused=False, draining=False)

    async def list_tokens(request: Request):
        """The state store's tokens: owner names, labels, when added and revoked (never the tokens)."""
        operator(request)
        return {"tokens": queue.state.tokens()}

    async def add_token(request: Request):
        """Accept a token (``{"token", "label"}``; without a token a new one is made and shown once)."""
        operator(request)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, ErrorCode.REQUEST_INVALID, 'the body must be {"token": ..., "label": ...}')
        token = body.get("token") or secrets.token_urlsafe(24)
        try:
            owner = queue.state.add_token(str(token), body.get("label"))
        except ValueError as exc:
            raise ApiError(400, ErrorCode.REQUEST_INVALID, str(exc)) from None
        return {"owner": owner, **({"token": token} if not body.get("token") else {})}

    async def revoke_token(name: str, request: Request):
        """Refuse a token (named by itself or by its owner name) from the next request on."""
        operator(request)
        if queue.state.revoke_token(name) == 0:
            if len(name) < 16 or queue.state.token_status(name) is not None:
                raise ApiError(404, ErrorCode.REQUEST_INVALID, f"no accepted token or owner {name!r}")
            queue.state.add_token(name)  # a token of DISCO_API_TOKENS: its revocation is kept
            queue.state.revoke_token(name)
        return {"revoked": name if len(name) < 16 else None}

    app.add_api_route("/admin/jobs", all_jobs, methods=["GET"], tags=["admin"])
    app.add_api_route("/admin/jobs/{job_id}", cancel_any, methods=["DELETE"], tags=["admin"])
    app.add_api_route("/admin/queue", show_queue, methods=["GET"], tags=["admin"])
    app.add_api_route("/admin/pause", pause, methods=["POST"], tags=["admin"])
    app.add_api_route("/admin/drain", drain, methods=["POST"], tags=["admin"])
    app.add_api_route("/admin/resume", resume, methods=["POST"], tags=["admin"])
    app.add_api_route("/admin/tokens", list_tokens, methods=["GET"], tags=["admin"])
    app.add_api_route("/admin/tokens", add_token, methods=["POST"], tags=["admin"])
    app.add_api_route("/admin/tokens/{name}", revoke_token, methods=["DELETE"], tags=["admin"])
