"""Talking to a running Flow over gRPC, for every process that does: the client and the gateway's job
queue. One request (``post``), the calls the job queue makes (``FlowClient``), the token's gRPC
metadata, what a failed call means (``classify``: a ``wire.Failure`` with its code) and how long a
call that could not reach a restarting Flow is tried again (``RETRY``).
"""

from __future__ import annotations

from dataclasses import dataclass

from disco_service import wire

__all__ = [
    "bearer_metadata",
    "classify",
    "flow_client",
    "FlowClient",
    "post",
    "RETRY",
    "RetryPolicy",
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
    the exception into one line of its own (``classify``)."""
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

    async def progress(self, ids: list[str], frame: bool = False, keep_alive: bool = True):
        parameters = {**({"frame": True} if frame else {}), **({} if keep_alive else {wire.KEEP_ALIVE: False})}
        return await post(
            self.client, wire.PROGRESS, _ids_of(ids), wire.JOB_STATE_EXECUTOR, parameters or None, self.metadata
        )

    async def cancel(self, ids: list[str]) -> None:
        await post(self.client, wire.CANCEL, _ids_of(ids), wire.JOB_STATE_EXECUTOR, None, self.metadata)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _ids_of(ids: list[str]):
    from docarray import Document, DocumentArray

    return DocumentArray([Document(id=i) for i in ids])


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request that could not reach the Flow before its image started is sent again: a
    Flow that serve.py restarts after a fault is back within ``for_s``, so callers wait instead of
    failing. The client's runner and the gateway's job queue both follow ``RETRY``."""

    for_s: float = 180.0
    pause_s: float = 2.0

    def retries(self, failure: wire.Failure) -> bool:
        """Whether a request that failed so, before its image started, may be sent again."""
        return failure.code in wire.RESTARTING

    def within(self, first_try: float, now: float) -> bool:
        """Whether a request first tried at ``first_try`` (seconds, the same clock as ``now``) may still be."""
        return now - first_try < self.for_s


RETRY = RetryPolicy()

# What the gateway's own refusals say, by the code in the call's trailing metadata.
_TOKEN_MESSAGES = {
    wire.ErrorCode.TOKEN_REQUIRED: (
        "the server needs a token: give --token (or set DISCO_API_TOKEN, or token= in Python)"
    ),
    wire.ErrorCode.TOKEN_MALFORMED: "the server did not accept the token (it must be 'Bearer TOKEN')",
    wire.ErrorCode.TOKEN_REJECTED: "the server did not accept the token",
}


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling (Jina re-raises gRPC's)."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _jina_status(error: BaseException):
    """The ``header.status`` of the answer a Jina client error carries (``BadServer(header)``), or None."""
    args = getattr(error, "args", None) or (None,)
    status = getattr(args[0], "status", None)
    return status if getattr(getattr(status, "exception", None), "name", "") else None


def _rpc_error(error: BaseException):
    import grpc

    return next((e for e in _chain(error) if isinstance(e, grpc.RpcError) and hasattr(e, "code")), None)


def classify(error: BaseException) -> wire.Failure:
    """What a failed call to the Flow means, as a ``wire.Failure`` (code, one-line message, the setting
    and the executor concerned). The one place that reads Jina's and gRPC's own errors: the code the
    gateway put in the trailing metadata, the gRPC status code, the exception Jina reports, and
    Jina's words for an executor it could not reach."""
    import grpc

    if not isinstance(error, ConnectionError) and _jina_status(error) is None and _rpc_error(error) is None:
        return wire.failure_of(error)  # raised in this process (or a stand-in for the Flow)
    status = _jina_status(error)
    exc = getattr(status, "exception", None)
    rpc = _rpc_error(error)
    rpc_code = rpc.code() if rpc is not None else None
    trailing = (rpc.trailing_metadata() if rpc is not None else None) or ()
    metadata = {item[0]: item[1] for item in trailing}  # pairs, whichever gRPC API made them
    text = " ".join(str(a) for a in getattr(exc, "args", None) or []) + " " + str(error)
    if rpc is not None:
        text += " " + str(rpc.details())
    for name in (wire.ENCODER, wire.SAMPLER, wire.RENDERER):
        if f"deployment {name}" in text:  # Jina's gateway could not reach that executor
            message = f"the Flow's {name} could not be reached (it may be restarting after a fault)"
            return wire.Failure(wire.ErrorCode.EXECUTOR_RESTARTING, message, executor=name)
    if rpc_code == grpc.StatusCode.UNAUTHENTICATED:
        try:
            code = wire.ErrorCode(metadata.get(wire.ERROR_CODE_METADATA))
        except ValueError:
            code = wire.ErrorCode.TOKEN_REJECTED
        return wire.Failure(code, _TOKEN_MESSAGES.get(code, _TOKEN_MESSAGES[wire.ErrorCode.TOKEN_REJECTED]))
    if exc is not None and exc.name in wire.EXCEPTION_CODES:  # the service's own refusal or failure
        return wire.failure_of_exception(exc.name, list(exc.args))
    if rpc_code == grpc.StatusCode.UNAVAILABLE or "UNAVAILABLE" in text or "failed to connect" in text:
        message = "the Flow cannot be reached (gRPC UNAVAILABLE): is it running, and is the address right?"
        return wire.Failure(wire.ErrorCode.FLOW_UNREACHABLE, message)
    if exc is not None:
        return wire.failure_of_exception(exc.name, list(exc.args))
    first = next((line.strip() for line in str(error).splitlines() if line.strip() and line.strip() != "None"), "")
    return wire.Failure(wire.ErrorCode.INTERNAL, f"{type(error).__name__}: {first}" if first else type(error).__name__)
