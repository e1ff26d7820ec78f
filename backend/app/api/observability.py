"""HTTP metrics by endpoint (the route template): requests, latency, body sizes, in progress.

Label values are bounded: ``endpoint`` is the template routing matched (``unmatched`` for
an unknown path), ``method`` one of :data:`METHODS` (else ``other``), ``status`` the code.
Each (method, endpoint) keeps its label children, so a request makes no label lookup in
prometheus-client and allocates only what measures it (one small object, two for a chunked
body).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import (
    HTTP_DURATION,
    HTTP_IN_PROGRESS,
    HTTP_REQUEST_SIZE,
    HTTP_REQUESTS,
    HTTP_RESPONSE_SIZE,
)

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def endpoint_of(scope: Scope) -> str:
    """The path template routing matched (``/api/v1/reports/jobs/{job_id}``), or ``unmatched``.

    FastAPI records the matched route in the scope, also for a 405 on a known path.
    """
    path = getattr(scope.get("route"), "path", None)
    return str(path) if path else UNMATCHED


def declared_body_size(scope: Scope) -> int | None:
    """The request's ``Content-Length``, 0 without a body, None for a chunked body."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
        if name == b"transfer-encoding":
            return None
    return 0


class _Series:
    """The label children of one (method, endpoint), made on its first request."""

    __slots__ = ("duration", "endpoint", "method", "request_size", "response_size", "statuses")

    def __init__(self, method: str, endpoint: str) -> None:
        self.method, self.endpoint = method, endpoint
        self.duration = HTTP_DURATION.labels(method, endpoint)
        self.request_size = HTTP_REQUEST_SIZE.labels(method, endpoint)
        self.response_size = HTTP_RESPONSE_SIZE.labels(method, endpoint)
        self.statuses: dict[int, Any] = {}

    def requests(self, status: int) -> Any:
        """The ``http_requests_total`` child of ``status``."""
        child = self.statuses.get(status)
        if child is None:
            child = HTTP_REQUESTS.labels(self.method, self.endpoint, str(status))
            self.statuses[status] = child
        return child


class _ResponseMeter:
    """The ``send`` of one request: passes each message on, noting status and body bytes."""

    __slots__ = ("send", "size", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500  # what the client gets when the app fails before answering
        self.size = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.size += len(message.get("body", b""))
        elif kind == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


class _BodyMeter:
    """The ``receive`` of a chunked request: counts the body bytes the app reads."""

    __slots__ = ("receive", "size")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.size = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
        return message


class HttpMetricsMiddleware:
    """``http_requests_total``, ``http_request_duration_seconds``,
    ``http_request_size_bytes`` and ``http_response_size_bytes`` by method and endpoint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[str, dict[str, _Series]] = {}  # endpoint -> method -> children

    def series(self, method: str, endpoint: str) -> _Series:
        """The children of ``method`` (already bounded) on ``endpoint``."""
        by_method = self._series.get(endpoint)
        if by_method is None:
            by_method = self._series[endpoint] = {}
        series = by_method.get(method)
        if series is None:
            series = by_method[method] = _Series(method, endpoint)
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        declared = declared_body_size(scope)
        body = None if declared is not None else _BodyMeter(receive)
        response = _ResponseMeter(send)
        try:
            await self.app(scope, receive if body is None else body, response)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            try:
                series = self.series(
                    method if method in METHODS else OTHER_METHOD, endpoint_of(scope)
                )
                series.duration.observe(elapsed)
                series.request_size.observe(body.size if body is not None else declared or 0)
                series.response_size.observe(response.size)
                series.requests(response.status).inc()
            except Exception:  # a metrics problem never fails the request
                log.warning("metrics.http.record_failed", exc_info=True)


class TrackedRoute(APIRoute):
    """An :class:`APIRoute` counted in ``http_requests_in_progress`` while its handler runs.

    The handler runs once routing has matched, so the gauge has the route template too.
    Every router of the app uses this class (``route_class``): wrapping the handler costs
    less than an app-wide dependency, which FastAPI would solve on every request.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.path
        gauges: dict[str, Any] = {}  # method (one of this route's) -> child

        async def tracked(request: Request) -> Response:
            method = request.method
            gauge = gauges.get(method)
            if gauge is None:
                gauge = gauges[method] = HTTP_IN_PROGRESS.labels(method, endpoint)
            gauge.inc()
            try:
                return await handler(request)
            finally:
                gauge.dec()

        return tracked
