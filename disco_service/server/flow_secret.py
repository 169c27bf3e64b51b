"""The Flow's own secret: executors answer only their own gateway.

The executors' gRPC ports are the Flow's inside: a call there skips the gateway's tokens, queue and
ownership rules. So every executor refuses any call that does not carry the Flow's secret in its
``disco-flow-secret`` gRPC metadata (``UNAUTHENTICATED``), and the gateway sends it on every call it
makes to them (Jina's per-deployment ``grpc_metadata``). Open to anyone are only the calls that say
nothing about the images: the gRPC health check, and the service and endpoint names the gateway
asks for without metadata (gRPC reflection, Jina's endpoint discovery).

Where the secret comes from, first found: the process's own argument (``flow_secret`` in
``uses_with``: ``serve.py`` makes one at random at start), ``DISCO_FLOW_SECRET`` (on Kubernetes,
from the Secret of the export), or else a file in the user's state folder
(``DISCO_STATE_DIR/.flow-secret``, mode 0600, made by the first process that needs it): the
processes of a plain ``jina flow --uses flow.yml`` share it there, beside the state store they share.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

from disco_service.server.tokens import Unauthorized, refusal_handler  # the gateway's token refusal
from disco_service.wire import ErrorCode

__all__ = [
    "deployments_metadata",
    "executor_interceptor",
    "guard_executor",
    "METADATA_KEY",
    "new_secret",
    "OPEN_EXECUTOR_METHODS",
    "resolve",
    "SECRET_FILE",
]

METADATA_KEY = "disco-flow-secret"
SECRET_FILE = ".flow-secret"
# what an executor answers without the secret: health, and what the gateway asks without metadata at
# start (the names of the gRPC services and of the endpoints); none of it says anything of an image
OPEN_EXECUTOR_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/jina.JinaDiscoverEndpointsRPC/endpoint_discovery",
)
REFUSAL = "this executor answers its own Flow's gateway only: send requests to the gateway"


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def resolve(given: str | None = None, folder: str | Path | None = None) -> str:
    """The Flow's secret: ``given``, else ``DISCO_FLOW_SECRET``, else the one in ``folder``'s
    secret file (default the user's state folder, ``DISCO_STATE_DIR``), made there if missing.
    Raises ``OSError`` when the file can be neither read nor made."""
    if given:
        return given
    from disco_service import config

    cfg = config.load()
    if cfg.flow_secret:
        return cfg.flow_secret
    folder = Path(folder or cfg.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SECRET_FILE
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError):
            if text := path.read_text().strip():
                return text
        tmp = folder / f".{SECRET_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_secret())
        try:
            os.link(tmp, path)  # whole or not at all; the first process to get here decides for all
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        time.sleep(0.01)
    raise OSError(f"cannot read or make the Flow's secret in {path}")


def deployments_metadata(current: dict[str, dict[str, str]], executors: list[str], secret: str) -> dict:
    """Jina's ``deployments_metadata`` (the gRPC metadata the gateway sends to each executor) with
    the secret added for every one of ``executors``."""
    return {**current, **{name: {**current.get(name, {}), METADATA_KEY: secret} for name in executors}}


def executor_interceptor(secret: str):
    """A gRPC (asyncio) server interceptor refusing every call without ``secret`` in its
    ``disco-flow-secret`` metadata (``UNAUTHENTICATED``), but ``OPEN_EXECUTOR_METHODS``."""
    import grpc

    expected = secret.encode()

    class FlowSecretInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None or details.method in OPEN_EXECUTOR_METHODS:
                return handler
            for item in details.invocation_metadata or ():
                key, value = (item.key, item.value) if hasattr(item, "key") else item
                sent = value.encode() if isinstance(value, str) else bytes(value)
                if key == METADATA_KEY and hmac.compare_digest(sent, expected):
                    return handler
            return refusal_handler(handler, Unauthorized(REFUSAL, ErrorCode.GATEWAY_ONLY))

    return FlowSecretInterceptor()


_guarded: dict[int, str] = {}  # id(executor) -> its secret, in this process


def guard_executor(executor: Any, secret: str) -> None:
    """Make ``executor``'s gRPC server (built after the executor, in the same process) refuse calls
    without ``secret``. Jina has no setting for an executor's server interceptors, so its gRPC
    server's set-up is wrapped once per process to add ours for the executors guarded here."""
    from jina.serve.runtimes.servers.grpc import GRPCServer

    _guarded[id(executor)] = secret
    if getattr(GRPCServer.setup_server, "_flow_secret", False):
        return
    original = GRPCServer.setup_server

    async def setup_server(self):
        guarded = getattr(getattr(self, "_request_handler", None), "_executor", None)
        secret = _guarded.get(id(guarded)) if guarded is not None else None
        if secret:
            self.grpc_tracing_server_interceptors = [
                executor_interceptor(secret),
                *(self.grpc_tracing_server_interceptors or []),
            ]
        return await original(self)

    setup_server._flow_secret = True
    GRPCServer.setup_server = setup_server
