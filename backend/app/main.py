"""``create_app()``: the FastAPI application with its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# anyio imports its event-loop backend on first use; done here, at import, it never races
# another thread's import at start-up (seen once: KeyError 'anyio._backends' in the lifespan).
import anyio._backends._asyncio  # noqa: F401
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import bootstrap
from app.api import console_web
from app.api.errors import install_error_handlers
from app.api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from app.api.observability import HttpMetricsMiddleware
from app.api.routes import (
    admin,
    console,
    console_schedules,
    health,
    metrics,
    reports,
    schedules,
    stats,
)
from app.api.shutdown import DrainMiddleware, install_drain
from app.core.config import Settings, get_settings
from app.core.logging import setup_logging
from app.core.metrics_export import forget_process
from app.services.auth import ApiKeyCache
from app.services.traffic import DialLoop

log = logging.getLogger(__name__)


def operation_id(route: APIRoute) -> str:
    """The route's name as its OpenAPI operationId (``enqueue_heavy``, ``download_report``):
    readable names for generated clients; FastAPI's default repeats the path and method."""
    return route.name


def start_dial(container: bootstrap.Container) -> DialLoop | None:
    """Seed or read the traffic dial, route by it, and keep reading it in the background."""
    dial = container.traffic
    if dial is None:
        return None
    dial.start()
    settings = container.settings
    loop = DialLoop(
        dial,
        poll=settings.traffic.traffic_poll_seconds,
        guard=settings.traffic.traffic_guard_interval,
    )
    loop.start()
    return loop


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """The API; ``overrides`` replace ports of the container (see :func:`bootstrap.build`)."""
    settings = settings or get_settings()
    setup_logging(settings.process.log_level, settings.process.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = bootstrap.build(settings, loop=asyncio.get_running_loop(), **overrides)
        try:
            container.check_schema()
        except Exception:
            container.close()
            raise
        app.state.container = container
        app.state.key_cache = ApiKeyCache(settings.auth_cache_ttl)
        app.state.enqueue_limiter = CapacityLimiter(settings.enqueue_slots)
        if not settings.auth_required:
            log.warning(
                "api.auth_disabled",
                extra={"detail": "API keys are not checked (AUTH_ENABLED=false, development)"},
            )
        app.state.draining = False
        restore_signals = install_drain(app.state, settings.drain_seconds)
        dial_loop = await run_in_threadpool(start_dial, container)
        await run_in_threadpool(container.recover)
        ticker = container.ticker() if settings.ticker_in_api else None
        if ticker is not None:
            ticker.start()
        log.info(
            "api.started",
            extra={
                "environment": settings.process.environment.value,
                "backend": settings.routing.dispatch_backend,
            },
        )
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection no longer walks it (~100 ms with every request of the loop waiting).
        gc.freeze()
        yield
        gc.unfreeze()
        app.state.draining = True
        restore_signals()
        if dial_loop is not None:
            await run_in_threadpool(dial_loop.stop)
        if ticker is not None:
            await run_in_threadpool(ticker.stop)
        await run_in_threadpool(container.close)
        await container.rate_limiter.aclose()
        forget_process()  # this worker's live gauges leave the merged metrics with it
        log.info("api.stopped")

    app = FastAPI(
        title="MonAssurance report jobs",
        version="1.0.0",
        description="Enqueue, follow, download and cancel report jobs. "
        "The job ledger is the source of truth; Celery, RQ or an inline pool runs them.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    app.add_exception_handler(console_web.Away, console_web.go_away)
    app.add_middleware(DrainMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.security.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(reports.router)
    app.include_router(schedules.router)
    app.include_router(stats.router)
    app.include_router(admin.router)
    app.mount("/console/static", StaticFiles(directory=console.ROOT / "static"), name="static")
    app.include_router(console.router)
    app.include_router(console_schedules.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app
