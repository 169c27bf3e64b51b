"""Talking to a running Flow over gRPC, for every process that does: the client and the gateway's job
queue. One request (``post``), the calls the job queue makes (``FlowClient``), the token's gRPC
metadata, and what a failed call means (``unreachable``, ``server_message``).
"""

from __future__ import annotations

from disco_service import wire

__all__ = [
    "bearer_metadata",
    "flow_client",
    "FlowClient",
    "post",
    "server_message",
    "unreachable",
    "unreachable_executor",
]


async def post(
    client,
    endpoint: str,
    docs,
    target_executor: str | None = None,
    parameters: dict | None = None,
    metadata: tuple = (),
):
    """One request (``metadata``: gRPC metadata, e.g. the token); the Documents that come back."""
    from docarray import DocumentArray

    out = DocumentArray()
    options = {"metadata": metadata} if metadata else {}
    async for response in client.post(
        endpoint, docs, parameters=parameters or {}, target_executor=target_executor, **options
    ):
        out.extend(response)
    return out


def flow_client(address: str):
    """Jina's asyncio gRPC client for ``address``, with its own log of failed calls muted: those are
    ERROR blocks on stdout (where client.py writes its JSON summary), and every caller here turns
    the exception into one line of its own (``server_message``)."""
    import logging

    from jina import Client

    client = Client(host=address, asyncio=True)
    client.logger.logger.setLevel(logging.CRITICAL)
    return client


class FlowClient:
    """The calls the job queue makes to a Flow over gRPC (job_queue.FlowCalls), with ``metadata``."""

    def __init__(self, address: str, metadata: tuple = ()):
        self.address = address
        self.metadata = metadata
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = flow_client(self.address)
        return self._client

    async def generate(self, doc):
        from docarray import DocumentArray

        parameters = {wire.ACCEPT_UNFINISHED: True}
        out = await post(self.client, wire.GENERATE, DocumentArray([doc]), None, parameters, self.metadata)
        return out[0]

    async def progress(self, ids: list[str], frame: bool = False):
        return await post(
            self.client, wire.PROGRESS, _ids_of(ids), wire.JOB_STATE_EXECUTOR, {"frame": True} if frame else None,
            self.metadata,
        )  # fmt: skip

    async def cancel(self, ids: list[str]) -> None:
        await post(self.client, wire.CANCEL, _ids_of(ids), wire.JOB_STATE_EXECUTOR, None, self.metadata)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _ids_of(ids: list[str]):
    from docarray import Document, DocumentArray

    return DocumentArray([Document(id=i) for i in ids])


def _status(error: BaseException):
    """The gRPC status a Jina client error carries, or None."""
    return getattr(getattr(error, "args", [None])[0] if getattr(error, "args", None) else None, "status", None)


def unreachable_executor(error: BaseException) -> str | None:
    """The executor the gateway could not reach, when that is what ``error`` says (else None)."""
    status = _status(error)
    exc = getattr(status, "exception", None)
    text = " ".join(str(a) for a in getattr(exc, "args", []) or []) + " " + str(error)
    for name in (wire.ENCODER, wire.SAMPLER, wire.RENDERER):
        if f"deployment {name}" in text:
            return name
    return None


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the Flow (or one of its executors) could not be reached, rather than
    that it refused or failed the request."""
    if unreachable_executor(error) is not None:
        return True
    text = str(error)
    return "UNAVAILABLE" in text or "failed to connect to all addresses" in text


def server_message(error: BaseException) -> str:
    """What went wrong, in one line: the server's own exception (``Name: message``), or the
    transport's failure without its gRPC dump."""
    if (name := unreachable_executor(error)) is not None:
        return f"the Flow's {name} could not be reached (it may be restarting after a fault)"
    text = str(error)
    if "UNAUTHENTICATED" in text:
        reason = next((r for r in ("needs a token", "not accepted", "must be 'Bearer") if r in text), "")
        if reason == "needs a token":
            return "the server needs a token: give --token (or set DISCO_API_TOKEN, or token= in Python)"
        return "the server did not accept the token" + (" (it must be 'Bearer TOKEN')" if "Bearer" in reason else "")
    exc = getattr(_status(error), "exception", None)
    if exc is not None and getattr(exc, "args", None):
        return f"{exc.name}: {exc.args[0]}"
    if "failed to connect to all addresses" in text or "UNAVAILABLE" in text:
        return "the Flow cannot be reached (gRPC UNAVAILABLE): is it running, and is the address right?"
    first = next((line.strip() for line in text.splitlines() if line.strip() and line.strip() != "None"), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
