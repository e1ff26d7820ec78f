"""Kubernetes-style probes, and a summary for people.

- ``/health/live``: the process answers; nothing else is checked (a restart would not help
  a dependency outage).
- ``/health/ready``: the ledger, the artifact store and every enabled broker answer within
  ``HEALTH_TIMEOUT`` and the process is not draining; 503 otherwise, so traffic goes
  elsewhere. Where jobs may run inline (the development default), the brokers are not
  required.
- ``/health/startup``: the schema is at the migrations' head and the settings were valid
  (a process with invalid settings refuses to start, so it never answers at all).
- ``/health``: each component's state and latency, the workers per queue, the drain state,
  and every circuit breaker of this process (``closed``, ``half_open`` or ``open``); an
  open circuit makes the summary ``degraded``, never ``down``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.dependencies import get_container
from app.api.observability import TrackedRoute
from app.core.circuit import CircuitState
from app.domain.operations import ComponentHealth

router = APIRouter(tags=["health"], route_class=TrackedRoute)
_ALWAYS_REQUIRED = frozenset({"database", "storage"})


def _draining(request: Request) -> bool:
    return bool(getattr(request.app.state, "draining", False))


def _component(health: ComponentHealth) -> dict[str, Any]:
    return {
        "status": "up" if health.ok else "down",
        "latency_ms": round(health.latency_s * 1000, 1),
        **({"detail": health.detail} if health.detail else {}),
    }


def _check(request: Request) -> list[ComponentHealth]:
    return get_container(request).health.components()


@router.get("/health/live", name="health_live")
async def live() -> dict[str, str]:
    """The process answers; no dependency is checked."""
    return {"status": "ok"}


@router.get("/health/ready", name="health_ready")
def ready(request: Request) -> JSONResponse:
    """The ledger, the store and the brokers answer, and the process is not shutting down."""
    if _draining(request):
        return JSONResponse({"status": "draining"}, status_code=503)
    components = _check(request)
    # Where jobs may run inline (development), a missing broker does not stop the service.
    brokers_required = not get_container(request).settings.inline_allowed
    ok = all(c.ok for c in components if brokers_required or c.name in _ALWAYS_REQUIRED)
    body = {
        "status": "ok" if ok else "unavailable",
        "components": {c.name: _component(c) for c in components},
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/health/startup", name="health_startup")
def startup(request: Request) -> JSONResponse:
    """The database schema is at the migrations' head; the settings were valid at start."""
    container = get_container(request)
    try:
        container.check_schema()
    except Exception as exc:
        detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"[:300]
        return JSONResponse({"status": "not_started", "schema": detail}, status_code=503)
    return JSONResponse(
        {
            "status": "ok",
            "schema": "at head",
            "settings": "valid",
            "environment": container.settings.process.environment.value,
        }
    )


@router.get("/health", name="health_summary")
def summary(request: Request) -> JSONResponse:
    """Every component and circuit; 503 when the ledger is down or draining."""
    container = get_container(request)
    components = _check(request)
    circuits = container.health.circuits()
    database_ok = all(c.ok for c in components if c.name == "database")
    draining = _draining(request)
    if not database_ok or draining:
        status = "down"
    elif all(c.ok for c in components) and CircuitState.OPEN.value not in circuits.values():
        status = "ok"
    else:
        status = "degraded"
    workers = [
        {"backend": w.backend.value, "queue": w.queue.value, "workers": w.workers}
        for w in container.deps.dispatcher.workers()
    ]
    body = {
        "status": status,
        "draining": draining,
        "components": {c.name: _component(c) for c in components},
        "circuits": circuits,
        "workers": workers,
    }
    return JSONResponse(body, status_code=503 if status == "down" else 200)
