"""The console's web plumbing: rendering with its security headers, the session cookie,
CSRF-checked forms, and the jobs page's query parsing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app.api.dependencies import get_container, spend
from app.bootstrap import Container
from app.domain.console import ConsoleFilter, ConsoleSession
from app.domain.errors import Forbidden, InvalidInput, Unauthenticated
from app.domain.jobs import utcnow
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus
from app.services import console as svc

ROOT = Path(__file__).resolve().parents[1] / "console"
COOKIE = "console_session"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=ROOT / "templates")


def secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return secured(templates.TemplateResponse(request, name, context, status_code=status))


def redirect(url: str) -> Response:
    return secured(RedirectResponse(url, status_code=303))


async def session_of(request: Request) -> ConsoleSession:
    """The caller's session, once its key's token bucket (the API's) allows one more request.

    Raises:
        Unauthenticated: no valid session.
        RateLimited: the key spent its budget.
    """
    container = get_container(request)
    session = await run_in_threadpool(
        svc.resolve_session,
        console=container.console,
        token=request.cookies.get(COOKIE),
        now=utcnow(),
        keys_required=container.settings.auth_required,
        idle=idle_timeout(container),
    )
    await spend(request, session.key_id)
    return session


async def by_address(request: Request) -> None:
    """Rate limit a request that has no caller yet (the sign-in pages) by its address."""
    await spend(request, f"addr:{request.client.host if request.client else 'unknown'}")


def idle_timeout(container: Container) -> timedelta:
    return timedelta(minutes=container.settings.security.console_idle_minutes)


def check_origin(request: Request) -> None:
    """A browser posting from another site names it in ``Origin``: refused, so that no page
    elsewhere can sign a visitor in under its own key (login CSRF). No header: not a
    browser's cross-site form."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("The form was posted from another site.", code="CSRF_FAILED")


async def form_of(request: Request, session: ConsoleSession) -> dict[str, str]:
    """The url-encoded form, once its CSRF token matched the session's."""
    fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
    svc.check_csrf(session, fields.get("csrf"))
    return fields


def with_cookie(request: Request, response: Response, token: str) -> Response:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
        max_age=int(idle_timeout(get_container(request)).total_seconds()) * 48,
    )
    return response


class Away(Exception):
    """A browser without a session: :attr:`response` sends it where it can get one."""

    def __init__(self, response: Response) -> None:
        super().__init__("no console session")
        self.response = response


async def go_away(_: Request, exc: Exception) -> Response:
    """The app's handler of :class:`Away`."""
    assert isinstance(exc, Away)
    return exc.response


async def signed_in(request: Request) -> ConsoleSession:
    """The session of a page's browser. Without one, :class:`Away` to the sign-in page, or
    (development, keys off) back to the same page with a fresh session's cookie."""
    try:
        return await session_of(request)
    except Unauthenticated:
        container = get_container(request)
        if container.settings.auth_required:
            target = "/console/sign-in?" + urlencode({"next": request.url.path})
            raise Away(redirect(target)) from None
        token, _ = await run_in_threadpool(new_session, container, None)
        raise Away(with_cookie(request, redirect(str(request.url)), token)) from None


#: A console page's caller (see :func:`signed_in`).
Session = Annotated[ConsoleSession, Depends(signed_in)]


def new_session(container: Container, key: str | None) -> tuple[str, ConsoleSession]:
    return svc.sign_in(
        keys=container.api_keys,
        console=container.console,
        presented=key,
        now=utcnow(),
        keys_required=container.settings.auth_required,
        idle=idle_timeout(container),
    )


def _choice(enum: Any, raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return enum(raw)
    except ValueError as exc:
        raise InvalidInput(f"Unknown value {raw!r}.", code="INVALID_FILTER") from exc


def _moment(raw: str | None) -> datetime | None:
    """``YYYY-MM-DDTHH:MM`` (a datetime-local field, read as UTC) or ISO 8601."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"Not a date and time: {raw!r}.", code="INVALID_FILTER") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def filters(query: Mapping[str, str]) -> ConsoleFilter:
    return ConsoleFilter(
        status=_choice(JobStatus, query.get("status")),
        report_type=_choice(ReportType, query.get("report_type")),
        backend=_choice(Backend, query.get("backend")),
        queue=_choice(Queue, query.get("queue")),
        owner=query.get("owner") or None,
        since=_moment(query.get("since")),
        until=_moment(query.get("until")),
    )


def number(raw: str) -> Any:
    """An integer when the text is one, else the text itself (the domain refuses it)."""
    text = raw.strip()
    return int(text) if text.lstrip("-").isdigit() else text
