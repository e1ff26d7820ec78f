"""Every error answers ``{"error": CODE, "message": ..., "timestamp": ..., "correlation_id": ...}``.

``correlation_id`` is the request's (see :class:`~app.api.middleware.RequestIdMiddleware`):
quoted by a caller, it finds the request's log lines, and those of the job it created.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.api.schemas import ErrorBody
from app.core.logging import Trace, correlation_id_var
from app.domain.errors import (
    AppError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from app.domain.jobs import utcnow

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AppError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
]
_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "timestamp": utcnow().isoformat()}
    correlation_id = correlation_id_var.get()
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: AppError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 400)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
    return error_response(status_of(exc), exc.code, exc.message, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "MALFORMED_JSON", "The request body is not valid JSON.")
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
        for e in errors
    ]
    return error_response(422, "VALIDATION_ERROR", "Invalid request: " + "; ".join(parts) + ".")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"No route {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """500 without the traceback; the stack goes to the log, under the request's ids.

    Starlette runs this handler outside every middleware: the request's ids come back from
    its scope, and the answer carries their headers itself.
    """
    trace = request.scope.get("state", {}).get("trace")
    if not isinstance(trace, Trace):
        trace = Trace(uuid.uuid4().hex)
    with trace.bound():
        log.error("http.unhandled", exc_info=exc)
        headers = {"X-Correlation-ID": trace.correlation_id}
        if trace.request_id is not None:
            headers["X-Request-ID"] = trace.request_id
        return error_response(
            500, "INTERNAL_ERROR", "Internal server error; it has been logged.", headers=headers
        )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route may give.

    A route that knows its caller (401) is rate limited too: 429 comes with 401.
    """
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    described = {
        400: "Malformed request body",
        401: "Missing or unknown API key",
        403: "The key's role may not do this",
        404: "Job not found",
        409: "Conflicts with the job's status",
        413: "Request body too large",
        422: "Invalid input",
        429: "Rate limit reached; see Retry-After",
        503: "No backend can take the job",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}
