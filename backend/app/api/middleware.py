"""Request and correlation ids (accepted or generated, logged, echoed); body size limit."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.core.logging import Trace

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Give each request its ids, tag its log lines with them and echo them on the answer.

    ``request_id``: ``X-Request-ID`` when valid, else a new one. ``correlation_id``:
    ``X-Correlation-ID`` when valid, else the request id. Both are echoed (``X-Request-ID``,
    ``X-Correlation-ID``) and kept in ``scope["state"]`` for the error handler that runs
    outside this middleware (the one of unexpected exceptions).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = request_trace(scope)
        scope.setdefault("state", {})["trace"] = trace
        echoed = [
            (b"x-request-id", (trace.request_id or "").encode("latin-1")),
            (b"x-correlation-id", trace.correlation_id.encode("latin-1")),
        ]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *echoed]
            await send(message)

        with trace.bound():
            await self.app(scope, receive, send_with_id)


def request_trace(scope: Scope) -> Trace:
    """The ids of a request, from its headers when they are valid."""
    headers = dict(scope["headers"])
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    request_id = given if _VALID.match(given) else uuid.uuid4().hex
    given = headers.get(b"x-correlation-id", b"").decode("latin-1")
    return Trace(given if _VALID.match(given) else request_id, request_id)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit."""


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 ``PAYLOAD_TOO_LARGE``.

    A declared ``Content-Length`` over the limit is refused before the body is read. A body
    without one (chunked) is counted as it streams: the chunk that passes the limit is never
    handed to the app, whatever the app answers is replaced by the 413.

    Args:
        app: The ASGI app to protect.
        max_bytes: Largest body accepted, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a cut-off body: the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:  # _BodyTooLarge, or what the app made of it
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "PAYLOAD_TOO_LARGE",
            f"The request body is larger than the {self.max_bytes} bytes accepted.",
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent or not a number (the server judges)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
