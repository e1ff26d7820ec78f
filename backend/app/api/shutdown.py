"""Graceful shutdown (drain) for the API.

On SIGTERM (or SIGINT) the API first *drains* for ``SHUTDOWN_DRAIN_SECONDS``: readiness
answers 503, so the load balancer's next health check takes the instance out of rotation,
while every request that still arrives is served as usual — refusing it would turn the
balancer's notice period into errors. Responses during the drain carry ``Connection:
close``, so a client holding a keep-alive connection to this instance reconnects (through
the balancer, elsewhere). Then uvicorn's own shutdown stops accepting connections and lets
in-flight requests finish (``--grace`` seconds) before the lifespan closes the container.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_CLOSE = (b"connection", b"close")


class DrainMiddleware:
    """While the app drains, serve as usual but close each connection after its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not getattr(scope["app"].state, "draining", False):
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _CLOSE]
            await send(message)

        await self.app(scope, receive, closing)


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
