"""Kubernetes-style probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import get_container

router = APIRouter(tags=["health"])


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process answers; no dependency is checked."""
    return {"status": "ok"}


@router.get("/health/ready")
def ready(request: Request) -> JSONResponse:
    """The ledger answers and the process is not shutting down."""
    container = get_container(request)
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        container.deps.repo.ping()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "database": str(exc)[:200]}, 503)
    return JSONResponse({"status": "ok"})
