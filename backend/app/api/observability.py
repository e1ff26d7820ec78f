"""HTTP metrics by route template: a request counter, a duration histogram, in-progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"


def route_of(scope: Scope) -> str:
    """The path template routing matched (``/api/v1/reports/jobs/{job_id}``), or ``unmatched``.

    FastAPI records the matched route in the scope, also for a 405 on a known path.
    """
    path = getattr(scope.get("route"), "path", None)
    return str(path) if path else UNMATCHED


class HttpMetricsMiddleware:
    """``http_requests_total`` and ``http_request_duration_seconds`` by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method, route = scope["method"], route_of(scope)
            try:
                HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
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

        async def tracked(request: Request) -> Response:
            gauge = HTTP_IN_PROGRESS.labels(request.method, route_of(request.scope))
            gauge.inc()
            try:
                return await handler(request)
            finally:
                gauge.dec()

        return tracked
