"""HTTP metrics by route template, and graceful shutdown (drain) for the API.

Graceful shutdown: on SIGTERM (or SIGINT) the API first *drains* — readiness answers 503
and new work (any non-GET request outside ``/health``) is refused with 503
``SHUTTING_DOWN`` — for ``SHUTDOWN_DRAIN_SECONDS``, so a load balancer stops sending
traffic; then uvicorn's own shutdown stops accepting connections and lets in-flight
requests finish (``--grace`` seconds) before the lifespan closes the container.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.core.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


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


class DrainMiddleware:
    """While the app drains, refuse new work with 503 (reads and probes still answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in _SAFE
            and not scope["path"].startswith("/health")
            and getattr(scope["app"].state, "draining", False)
        ):
            response = error_response(
                503,
                "SHUTTING_DOWN",
                "This instance is shutting down; retry on another one.",
                headers={"Connection": "close", "Retry-After": "5"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_drain(state: Any, seconds: float) -> Callable[[], None]:
    """Make SIGTERM/SIGINT start draining, then hand the signal on after ``seconds``.

    Returns a function restoring the previous handlers. Outside the main thread (tests
    driving the app in-process) signals cannot be handled: nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Handler] = {
        sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)
    }

    def hand_on(signum: int) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if state.draining:  # a second signal: stop now
            hand_on(signum)
            return
        state.draining = True
        log.info("api.draining", extra={"signal": signum, "drain_seconds": seconds})
        loop.call_soon_threadsafe(loop.call_later, seconds, hand_on, signum)

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)

    return restore
