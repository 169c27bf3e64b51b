"""Jina's own ways into the Flow (gRPC ``/generate`` and HTTP ``POST /post``) under the job API's rules.

Besides the job API, a caller may send Documents to the Flow's endpoints itself: over gRPC (as
``client.py`` does) or with Jina's ``POST /post``. Such a request keeps the rules of the job API:

- a ``/generate`` request is recorded in the state store as a job of its caller (its images sent
  already by this gateway, so the queue never sends them again): it is listed by ``GET /jobs``,
  shown in the page's gallery with its progress, frames and pictures, followed by the events and
  cancelled like a job of the job API, and no other token sees it. With tokens it counts toward
  the token's cap (``DISCO_MAX_JOBS_PER_TOKEN``, with the job API's jobs queued or running): at the
  cap it is refused with ``TooManyJobs``, as ``POST /jobs`` is; the day's quotas count it too;
- every image it sends is claimed for its caller in the result store (``ResultStore.claim``), so
  its result answers that caller only; an id another caller holds is refused (``NotYourImage``);
- ``/progress``, ``/cancel`` and ``/forget`` name only the caller's own images: an id another
  caller holds is refused the same way, so nobody watches or stops someone else's image.

It does not take turns with the job API's queue: such a request goes to the samplers as Jina sends
it (its images count as in flight meanwhile). Without tokens every caller is ``OPEN``: there is no
cap, and every image is everyone's.

The caller is known from its token where the gateway checks it (a gRPC interceptor, an HTTP
middleware) and reaches Jina's request handler through a context variable (``CALLER``): each
gRPC call and each HTTP request runs in its own asyncio task, and Jina's handling of it in tasks
started from there, which copy it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from disco_service import wire
from disco_service.server.job_queue import JobQueue, TooManyJobs
from disco_service.server.store import AlreadySent, TooManyUnfinished
from disco_service.server.tokens import OPEN, SERVICE, Tokens, Unauthorized

__all__ = ["CALLER", "caller_interceptor", "CallerMiddleware", "DirectCalls", "NotYourImage", "OFF_GRPC_METHODS"]

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("disco_caller", default=None)
# Jina's gRPC methods the gateway does not serve: its version and environment (as HTTP GET /status)
OFF_GRPC_METHODS = ("/jina.JinaInfoRPC/_status",)


class NotYourImage(ValueError):
    """A request names an image (Document id) that another caller sent."""


class DirectCalls:
    def __init__(self, queue: JobQueue, tokens: Tokens):
        """``queue``: the job API's queue (its state store records these requests as jobs, its
        result store keeps who owns each image); ``tokens``: the accepted tokens (none: an open
        service, no cap)."""
        self.queue = queue
        self.tokens = tokens

    def admit(self, request: Any) -> Callable[..., None] | None:
        """Check a request to the Flow against the caller's rules and record a ``/generate`` as a
        job of its caller (see the module); returns what to call once its answer is there, with
        the answered request when there is one (None when nothing is to be done then). Raises
        ``TooManyJobs``, ``QuotaExceeded`` or ``NotYourImage`` with the reason."""
        owner = CALLER.get()
        endpoint = request.header.exec_endpoint
        if owner == SERVICE or endpoint not in wire.ENDPOINTS:
            return None  # the job API's own calls, Jina's dry run (the health check)
        if owner is None:  # no token check saw this request: only an open service has nothing to check
            if not self.tokens.open:
                raise NotYourImage("the caller of this request is not known: send it with a token")
            owner = OPEN
        ids = [doc.id for doc in request.data.docs]
        for doc_id in ids:
            holder = self.owner_of(doc_id)
            if holder is not None and holder != owner:
                raise NotYourImage(f"no image {doc_id!r} for this caller")
        if endpoint != wire.GENERATE:
            return None
        for doc_id in ids:
            if not self.queue.store.claim(doc_id, owner):
                raise NotYourImage(f"no image {doc_id!r} for this caller")
        docs = [(doc.id, dict(doc.tags)) for doc in request.data.docs]
        if not docs:
            return None  # no image: nothing to record
        cap = None if owner == OPEN else self.queue.max_jobs_per_owner
        try:
            job = self.queue.record_call(owner, docs, cap)
        except TooManyUnfinished as exc:
            raise TooManyJobs(
                f"this caller already has {exc.count} jobs queued or running, the most this service allows "
                f"(DISCO_MAX_JOBS_PER_TOKEN={self.queue.max_jobs_per_owner}): wait for one to finish, or "
                "queue the images with the job API (POST /jobs)"
            ) from None
        except AlreadySent as exc:
            raise NotYourImage(str(exc)) from None

        def answered(response: Any = None) -> None:
            self.queue.end_call(job, response.data.docs if response is not None else None)

        return answered

    def owner_of(self, doc_id: str) -> str | None:
        """Who sent an image: a job's owner, or the caller that claimed it; None for an unknown id."""
        try:
            return self.queue.owner_of_image(doc_id) or self.queue.store.owner(doc_id)
        except ValueError:
            return None


def caller_interceptor(tokens: Tokens):
    """A gRPC (asyncio) server interceptor that sets ``CALLER`` to the caller's owner name for the
    handling of its call (after ``tokens.interceptor``, which refuses callers without a token), and
    answers ``OFF_GRPC_METHODS`` with ``UNIMPLEMENTED``."""
    import grpc

    class CallerInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None:
                return handler
            if details.method in OFF_GRPC_METHODS and not handler.request_streaming:

                async def off(request, context):
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this service does not answer this method")

                return grpc.unary_unary_rpc_method_handler(
                    off,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            metadata = {m.key if hasattr(m, "key") else m[0]: m.value if hasattr(m, "value") else m[1]
                        for m in details.invocation_metadata or ()}  # fmt: skip
            try:
                owner = tokens.owner(metadata.get("authorization"))
            except (Unauthorized, TypeError, ValueError):
                return handler  # refused by the token check before it gets here
            return _with_caller(handler, owner)

    return CallerInterceptor()


def _with_caller(handler, owner: str):
    """``handler`` with ``CALLER`` set to ``owner`` while it runs (the call's own task)."""
    import grpc

    async def unary_in(request, context):
        CALLER.set(owner)
        return await behaviour(request, context)

    async def stream_out(request, context):
        CALLER.set(owner)
        async for answer in behaviour(request, context):
            yield answer

    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary", unary_in),
        (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary", unary_in),
        (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream", stream_out),
        (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream", stream_out),
    }
    make, name, wrapped = kinds[(handler.request_streaming, handler.response_streaming)]
    behaviour = getattr(handler, name)
    return make(
        wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class CallerMiddleware:
    """An ASGI middleware that sets ``CALLER`` for the handling of each HTTP request from its
    ``Authorization`` header (the service's token check refuses what it does not accept)."""

    def __init__(self, app, tokens: Tokens):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            try:
                CALLER.set(self.tokens.owner(headers.get(b"authorization", b"").decode("latin-1") or None))
            except (Unauthorized, ValueError, TypeError):
                CALLER.set(None)
        return await self.app(scope, receive, send)
