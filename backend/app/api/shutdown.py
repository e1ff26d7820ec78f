"""Graceful shutdown (drain) for the API.

On SIGTERM (or SIGINT) the API first *drains* — readiness answers 503 and new work (any
non-GET request outside ``/health``) is refused with 503 ``SHUTTING_DOWN`` — for
``SHUTDOWN_DRAIN_SECONDS``, so a load balancer stops sending traffic; then uvicorn's own
shutdown stops accepting connections and lets in-flight requests finish (``--grace``
seconds) before the lifespan closes the container.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

log = logging.getLogger(__name__)

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


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
