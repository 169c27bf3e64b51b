"""What every request and answer of the gateway's HTTP port goes through, so no caller can stall
or crash it and no page of it can be misused.

- Bodies are bounded: a request whose body is larger than the limit (``DISCO_MAX_BODY_MB``) is
  answered 413 naming the limit, whether it says its length up front or streams it.
- Every answer carries the security headers (``SECURITY_HEADERS``): a Content-Security-Policy that
  the page satisfies (its script, style and pictures come from this server only; pictures and
  videos it shows may be ``blob:``/``data:`` URLs), ``nosniff``, and no framing by other sites.
- JSON bodies are read and checked off the event loop, with a time limit (``off_loop``), so one
  large request does not make every other caller wait; JSON nested too deeply is a 400.
- Downloads are named for any script (``content_disposition``, RFC 6266).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.exceptions import HTTPException

from disco.settings import SettingsError

__all__ = [
    "BodyTooLarge",
    "CHECK_TIME_S",
    "content_disposition",
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_MAX_BODY_BYTES",
    "guard",
    "off_loop",
    "parse_json",
    "SECURITY_HEADERS",
    "TookTooLong",
]

DEFAULT_MAX_BODY_BYTES = 64 * 2**20  # a camera photo or a short video, as a base64 data URI
CHECK_TIME_S = 60.0  # the most a request's input may take to be read and checked
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_UNSAFE_IN_QUOTES = re.compile(r'[^\x20-\x7e]|["\\%;]')
T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """A request's body is larger than the server takes (413; ``detail`` names the limit). An HTTP
    error of Starlette's, so any route reading the body answers it as it is."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class TookTooLong(TimeoutError):
    """Reading or checking a request's input took longer than its time limit."""


def _megabytes(limit: int) -> str:
    return f"{limit / 2**20:g} MB"


def parse_json(body: bytes) -> Any:
    """A request body as JSON (an empty body is ``None``). Raises ``SettingsError`` naming ``settings``
    for text that is not JSON, not UTF-8, or nested too deeply to read."""
    if not body:
        return None
    try:
        return json.loads(body)
    except RecursionError:
        raise SettingsError("settings", "the body nests its JSON too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise SettingsError("settings", f"the body is not JSON: {exc}") from None


async def off_loop(function: Callable[..., T], *args: Any, limit_s: float = CHECK_TIME_S) -> T:
    """``function(*args)`` in a worker thread, so the event loop keeps answering other callers
    meanwhile. Raises what it raises, a ``SettingsError`` for input nested too deeply, or
    ``TookTooLong`` after ``limit_s`` seconds (the worker finishes on its own; its result is dropped)."""
    from starlette.concurrency import run_in_threadpool

    try:
        return await asyncio.wait_for(run_in_threadpool(function, *args), limit_s)
    except TimeoutError:
        raise TookTooLong(f"checking the request took longer than {limit_s:g} s: send less") from None
    except RecursionError:
        raise SettingsError("settings", "the request nests its values too deeply to read") from None


def content_disposition(name: str, kind: str = "inline") -> str:
    """A ``Content-Disposition`` value naming a download ``name`` in any script (RFC 6266): an ASCII
    ``filename`` for old clients (other characters as ``_``) and the exact name as UTF-8 in
    ``filename*``. HTTP headers are Latin-1: the name itself never goes into one as it is."""
    fallback = _UNSAFE_IN_QUOTES.sub("_", name) or "download"
    exact = quote(name, safe="")
    if fallback == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def _refuse(status: int, detail: str, extra: tuple = ()) -> tuple[dict, dict]:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    return {"type": "http.response.start", "status": status, "headers": headers}, {
        "type": "http.response.body",
        "body": body,
    }


def guard(app, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """An ASGI app around ``app``: its answers carry ``SECURITY_HEADERS``; a body over
    ``max_body_bytes`` is answered 413 (its stated length at once, a streamed one as soon as it
    passes the limit), a ``Content-Length`` that is not a number 400."""

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        async def refuse(status: int, detail: str) -> None:
            start, body = _refuse(status, detail)
            await send_with_headers(start)
            await send(body)

        too_large = f"the body is larger than this server takes ({_megabytes(max_body_bytes)}, DISCO_MAX_BODY_MB)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                stated = int(length)
                if stated < 0:
                    raise ValueError
            except ValueError:
                shown = length[:40].decode("latin-1")
                return await refuse(400, f"Content-Length must be a whole number of bytes, got {shown!r}")
            if stated > max_body_bytes:
                return await refuse(413, too_large)
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    raise BodyTooLarge(too_large)
            return message

        try:
            await app(scope, bounded_receive, send_with_headers)
        except BodyTooLarge as exc:
            if started:
                raise
            await refuse(413, exc.detail)

    return guarded
