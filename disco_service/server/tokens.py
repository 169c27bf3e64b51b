"""Who may use the service: bearer tokens (``DISCO_API_TOKENS``) over HTTP and gRPC.

With tokens set, every HTTP route except the health check (``GET /``) and the page's own static
files (``/ui/``: HTML, CSS and JavaScript, no data) needs ``Authorization: Bearer TOKEN``, and every
gRPC call except the health checks (``jina ping``, ``Client.is_flow_ready``) needs the same value in
its ``authorization`` metadata. A caller is known by its token's fingerprint (``owner``); tokens
themselves are never written anywhere. Without tokens the service is open: every caller is
``OPEN``, and the gateway says so in its log when it listens beyond this machine.

Besides ``DISCO_API_TOKENS``, tokens can be added and revoked while the service runs, in its state
store (kept as SHA-256 hashes; a revoked token's next request is refused, even one of the variable):
``python -m disco_service.server.tokens add|revoke|list [--port GRPC_PORT]`` (the store of the
server on that port, or ``DISCO_DATABASE_URL``). ``DISCO_ADMIN_TOKENS`` are the operators' tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from disco_service.wire import ERROR_CODE_METADATA, ErrorCode

__all__ = [
    "refusal_handler",
    "fingerprint",
    "interceptor",
    "main",
    "LOOPBACK",
    "MAX_DRAINED",
    "OPEN",
    "OPEN_GRPC_METHODS",
    "SERVICE",
    "Tokens",
    "Unauthorized",
]

OPEN = "open"  # the owner of every caller of a service without tokens
SERVICE = "service"  # the gateway's own calls to its Flow (the job API)
# gRPC methods anyone may call: health checks only
OPEN_GRPC_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/jina.JinaGatewayDryRunRPC/dry_run",
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_DRAINED = 100  # messages read from a refused caller's stream before the refusal


class Unauthorized(PermissionError):
    """No token, or one the service does not know; the message says which to people, ``code`` (a
    ``wire.ErrorCode``) to programs."""

    def __init__(self, message: str, code: ErrorCode):
        super().__init__(message)
        self.code = code


def fingerprint(token: str) -> str:
    """The name a token's jobs are kept under: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _same(sent: str, known: str) -> bool:
    """Whether a sent token is a known one, in constant time. Compared as UTF-8 bytes: a header may
    carry any character, and ``hmac.compare_digest`` refuses text that is not ASCII."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), known.encode("utf-8", "surrogateescape"))


class Tokens:
    def __init__(self, tokens: Iterable[str] = (), admin_tokens: Iterable[str] = (), store: Any = None):
        """``tokens``: the accepted tokens; ``admin_tokens``: the operators' (accepted too);
        ``store``: a state store (``JobStore``) whose tokens are accepted besides, and whose
        revocations refuse even a token of ``tokens``: added and revoked there, they count at the
        next request. No token anywhere: an open service. The gateway's own calls to its Flow use
        ``self.service_token``, made here at random and never shown."""
        self.admins = frozenset(fingerprint(token) for token in admin_tokens)
        self._tokens = {token: fingerprint(token) for token in (*tokens, *admin_tokens)}
        self.store = store
        self.service_token = secrets.token_urlsafe(32)

    @property
    def open(self) -> bool:
        """No token is accepted anywhere: every caller is ``OPEN``."""
        return not self._tokens and (self.store is None or not self.store.has_tokens())

    def is_admin(self, owner: str | None) -> bool:
        """Whether ``owner`` may use the operator's routes: an admin token's, or anyone of an open service."""
        return owner in self.admins or (owner == OPEN and self.open)

    def owner(self, authorization: str | None) -> str:
        """The caller's owner name from an ``Authorization`` value (``Bearer TOKEN``): its token's
        fingerprint, ``SERVICE`` for the gateway itself, ``OPEN`` when the service has no tokens.
        Raises ``Unauthorized`` otherwise."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if token and scheme.lower() == "bearer" and _same(token, self.service_token):
            return SERVICE
        if self.open:
            return OPEN
        if not authorization:
            raise Unauthorized(
                "this service needs a token: send the header 'Authorization: Bearer TOKEN'", ErrorCode.TOKEN_REQUIRED
            )
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer TOKEN'", ErrorCode.TOKEN_MALFORMED)
        stored = self.store.token_status(token) if self.store is not None else None
        if stored is not None and stored["revoked"] is not None:
            raise Unauthorized("this token was revoked", ErrorCode.TOKEN_REJECTED)
        for known, name in self._tokens.items():
            if _same(token, known):
                return name
        if stored is not None:
            return stored["owner"]
        raise Unauthorized("this token is not accepted by the service", ErrorCode.TOKEN_REJECTED)

    def service_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for the gateway's own calls to its Flow."""
        return (("authorization", f"Bearer {self.service_token}"),)


def interceptor(tokens: Tokens):
    """A gRPC (asyncio) server interceptor that refuses calls without an accepted token
    (``UNAUTHENTICATED``, with the reason, and its code in the trailing metadata
    ``wire.ERROR_CODE_METADATA``), except ``OPEN_GRPC_METHODS``."""
    import grpc

    class TokenInterceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None or details.method in OPEN_GRPC_METHODS:
                return handler
            metadata = {m.key if hasattr(m, "key") else m[0]: m.value if hasattr(m, "value") else m[1]
                        for m in details.invocation_metadata or ()}  # fmt: skip
            try:
                tokens.owner(metadata.get("authorization"))
                return handler
            except Unauthorized as exc:
                return refusal_handler(handler, exc)

    return TokenInterceptor()


def refusal_handler(handler, refusal: Unauthorized):
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED with ``refusal``'s
    message, and its code in the trailing metadata."""
    import grpc

    message, trailing = str(refusal), ((ERROR_CODE_METADATA, refusal.code.value),)

    async def drain(requests) -> None:
        """Read what the caller streams (a bounded number of messages) before refusing: a caller still
        writing when the call ends sees gRPC's INTERNAL error instead of the refusal."""
        count = 0
        async for _ in requests:
            count += 1
            if count >= MAX_DRAINED:
                break

    async def refuse_unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message, trailing)

    async def refuse_stream_in(requests, context):
        await drain(requests)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message, trailing)

    async def refuse_stream_out(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message, trailing)
        yield  # an async generator, as a handler with a streamed answer is

    async def refuse_stream_both(requests, context):
        await drain(requests)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message, trailing)
        yield

    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, refuse_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, refuse_stream_out),
        (True, False): (grpc.stream_unary_rpc_method_handler, refuse_stream_in),
        (True, True): (grpc.stream_stream_rpc_method_handler, refuse_stream_both),
    }
    make, behaviour = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``add [TOKEN] [--label L]`` (a new random token when none is given; printed once),
    ``revoke TOKEN_OR_OWNER``, ``list``: the tokens of the state store of the server whose gRPC port
    is ``--port`` (default 51000), or of ``DISCO_DATABASE_URL``. Returns the exit status."""
    from disco_service import config
    from disco_service.server.store import open_store

    parser = argparse.ArgumentParser(prog="python -m disco_service.server.tokens", description=main.__doc__)
    parser.add_argument("--port", type=int, default=51000, help="the server's gRPC port (its SQLite store)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="accept a token (a new random one when none is given)")
    add.add_argument("token", nargs="?")
    add.add_argument("--label", help="who or what the token is for")
    revoke = commands.add_parser("revoke", help="refuse a token, named by itself or its owner name")
    revoke.add_argument("token")
    commands.add_parser("list", help="the tokens the store knows (owner names, never the tokens)")
    args = parser.parse_args(argv)
    with open_store(config.load().store_target(args.port)) as store:
        if args.command == "add":
            token = args.token or secrets.token_urlsafe(24)
            try:
                owner = store.add_token(token, args.label)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"added {owner}" + ("" if args.token else f": {token}  (shown once: keep it)"))
        elif args.command == "revoke":
            if store.revoke_token(args.token) == 0:
                if len(args.token) < 16 or store.token_status(args.token) is not None:
                    print(f"error: no accepted token or owner {args.token!r} in {store.url}", file=sys.stderr)
                    return 1
                store.add_token(args.token)  # a token of DISCO_API_TOKENS: its revocation is kept
                store.revoke_token(args.token)
            print(f"revoked {fingerprint(args.token) if len(args.token) >= 16 else args.token}")
        else:
            for row in store.tokens():
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["created"]))
                state = "revoked" if row["revoked"] is not None else "accepted"
                print(f"{row['owner']}  {state:8}  {when} UTC  {row['label'] or ''}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
