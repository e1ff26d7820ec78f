"""``/console``: the operators' pages, server-rendered (Jinja2) with one small script.

Every page needs a session (an API key exchanged for an HttpOnly, SameSite=Strict cookie);
every form that changes something carries the session's CSRF token; every answer forbids
framing and inline script. Routes parse and render; the services decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app.api.dependencies import get_container
from app.bootstrap import Container
from app.domain.console import ConsoleFilter, ConsoleSession
from app.domain.errors import AppError, Forbidden, InvalidInput, Unauthenticated
from app.domain.jobs import Backend, JobStatus, Queue, ReportType, utcnow
from app.domain.ports import Cursor
from app.services import console as svc
from app.services.cancel import cancel_job
from app.services.queries import artifact_of, get_job

ROOT = Path(__file__).resolve().parents[2] / "console"
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

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=ROOT / "templates")


def secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return secured(templates.TemplateResponse(request, name, context, status_code=status))


def redirect(url: str) -> Response:
    return secured(RedirectResponse(url, status_code=303))


async def session_of(request: Request) -> ConsoleSession:
    """The caller's session; with keys off (development), a new one is made on the fly."""
    container = get_container(request)
    return await run_in_threadpool(
        svc.resolve_session,
        keys=container.api_keys,
        console=container.console,
        token=request.cookies.get(COOKIE),
        now=utcnow(),
        keys_required=container.settings.auth_required,
    )


async def form_of(request: Request, session: ConsoleSession) -> dict[str, str]:
    """The url-encoded form, once its CSRF token matched the session's."""
    fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
    svc.check_csrf(session, fields.get("csrf"))
    return fields


def _with_cookie(request: Request, response: Response, token: str) -> Response:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
        max_age=int(svc.IDLE_TIMEOUT.total_seconds()) * 48,
    )
    return response


async def _signed_in(request: Request) -> tuple[ConsoleSession, Response | None]:
    """The session, or where to send a browser that has none (the sign-in page, or a
    fresh development session)."""
    try:
        return await session_of(request), None
    except Unauthenticated:
        container = get_container(request)
        if container.settings.auth_required:
            target = "/console/sign-in?" + urlencode({"next": request.url.path})
            return _NO_SESSION, redirect(target)
        token, session = await run_in_threadpool(_new_session, container, None)
        return session, _with_cookie(request, redirect(str(request.url)), token)


_NO_SESSION = ConsoleSession("", "", svc.DEVELOPER.role, "", "", utcnow(), utcnow())


def _new_session(container: Container, key: str | None) -> tuple[str, ConsoleSession]:
    return svc.sign_in(
        keys=container.api_keys,
        console=container.console,
        presented=key,
        now=utcnow(),
        keys_required=container.settings.auth_required,
    )


# --------------------------------------------------------------------------- sign-in


@router.get("", name="console_home")
async def home() -> Response:
    return redirect("/console/jobs")


@router.get("/sign-in", name="console_sign_in_page")
async def sign_in_page(request: Request) -> Response:
    return page(request, "sign_in.html", session=None, error=None)


@router.post("/sign-in", name="console_sign_in")
async def sign_in(request: Request) -> Response:
    fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
    container = get_container(request)
    try:
        token, _ = await run_in_threadpool(_new_session, container, fields.get("api_key"))
    except Unauthenticated as exc:
        return page(request, "sign_in.html", 401, session=None, error=exc.message)
    return _with_cookie(request, redirect("/console/jobs"), token)


@router.post("/sign-out", name="console_sign_out")
async def sign_out(request: Request) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    await form_of(request, session)
    container = get_container(request)
    token = request.cookies.get(COOKIE)
    await run_in_threadpool(svc.sign_out, console=container.console, token=token)
    response = redirect("/console/sign-in")
    response.delete_cookie(COOKIE, path="/console")
    return response


# --------------------------------------------------------------------------- jobs


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


def _cursor(raw: str | None) -> Cursor | None:
    if not raw or "|" not in raw:
        return None
    at, _, job_id = raw.partition("|")
    moment = _moment(at)
    try:
        return Cursor(moment, UUID(job_id)) if moment else None
    except ValueError as exc:
        raise InvalidInput("Not a page cursor.", code="INVALID_FILTER") from exc


def _filters(query: Mapping[str, str]) -> ConsoleFilter:
    return ConsoleFilter(
        status=_choice(JobStatus, query.get("status")),
        report_type=_choice(ReportType, query.get("report_type")),
        backend=_choice(Backend, query.get("backend")),
        queue=_choice(Queue, query.get("queue")),
        owner=query.get("owner") or None,
        since=_moment(query.get("since")),
        until=_moment(query.get("until")),
    )


@router.get("/jobs", name="console_jobs")
async def jobs(request: Request) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    query = dict(request.query_params)
    try:
        where = _filters(query)
        after = _cursor(query.get("after"))
    except InvalidInput as exc:
        return page(request, "error.html", 422, session=session, error=exc)
    view = await run_in_threadpool(
        svc.jobs_view,
        console=get_container(request).console,
        caller=session.principal,
        where=where,
        after=after,
    )
    more = None
    if view.page.next is not None:
        cursor = f"{view.page.next.created_at.isoformat()}|{view.page.next.id}"
        more = urlencode({**{k: v for k, v in query.items() if k != "after"}, "after": cursor})
    return page(
        request,
        "jobs.html",
        session=session,
        view=view,
        query=query,
        next_query=more,
        statuses=list(JobStatus),
        types=list(ReportType),
        backends=list(Backend),
        queues=list(Queue),
    )


@router.get("/api/progress", name="console_progress")
async def progress(request: Request, ids: str = "") -> Response:
    """Status, progress and stage of the listed jobs: what the page's script polls."""
    try:
        session = await session_of(request)
        job_ids = [UUID(i) for i in ids.split(",") if i][: svc.PAGE_SIZE]
    except (Unauthenticated, ValueError):
        return secured(JSONResponse({"error": "CONSOLE_SIGN_IN"}, status_code=401))
    found = await run_in_threadpool(
        svc.progress_of, deps=get_container(request).deps, caller=session.principal, job_ids=job_ids
    )
    body = {
        "jobs": [
            {"id": str(j.id), "status": j.status.value, "progress": j.progress, "stage": j.stage}
            for j in found
        ]
    }
    return secured(JSONResponse(body))


@router.get("/jobs/{job_id}", name="console_job")
async def job(request: Request, job_id: UUID) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    deps = get_container(request).deps
    try:
        found = await run_in_threadpool(
            get_job, deps=deps, job_id=job_id, owner=session.principal.scope
        )
    except AppError as exc:
        return page(request, "error.html", 404, session=session, error=exc)
    return page(request, "job.html", session=session, job=found, done=found.status.terminal)


@router.get("/jobs/{job_id}/download", name="console_download")
async def download(request: Request, job_id: UUID) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    deps = get_container(request).deps
    try:
        _, artifact, path = await run_in_threadpool(
            artifact_of, deps=deps, job_id=job_id, owner=session.principal.scope
        )
    except AppError as exc:
        return page(request, "error.html", 404, session=session, error=exc)
    response = FileResponse(path, media_type=artifact.content_type, filename=artifact.filename)
    return secured(response)


@router.post("/jobs/{job_id}/cancel", name="console_cancel")
async def cancel(request: Request, job_id: UUID) -> Response:
    return await _act(request, job_id, "cancel")


@router.post("/jobs/{job_id}/run-again", name="console_run_again")
async def run_again(request: Request, job_id: UUID) -> Response:
    return await _act(request, job_id, "run-again")


async def _act(request: Request, job_id: UUID, action: str) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    deps = get_container(request).deps
    caller = session.principal
    try:
        await form_of(request, session)
        if action == "cancel":
            await run_in_threadpool(cancel_job, deps=deps, job_id=job_id, owner=caller.scope)
            return redirect(f"/console/jobs/{job_id}")
        new = await run_in_threadpool(svc.run_again, deps=deps, caller=caller, job_id=job_id)
    except Forbidden as exc:
        return page(request, "error.html", 403, session=session, error=exc)
    except AppError as exc:
        status = 404 if exc.code == "JOB_NOT_FOUND" else 409
        return page(request, "error.html", status, session=session, error=exc)
    return redirect(f"/console/jobs/{new.id}?from={job_id}")


# --------------------------------------------------------------------------- queues & dial


@router.get("/queues", name="console_queues")
async def queues(request: Request) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    container = get_container(request)
    view = await run_in_threadpool(svc.queues_view, deps=container.deps, console=container.console)
    dial = container.traffic
    state = history = None
    if dial is not None and session.principal.sees_all:
        state = await run_in_threadpool(dial.state)
        history = await run_in_threadpool(dial.history, limit=20)
    idle = None
    if not view.rq_busy and view.rq_last_active is not None:
        idle = int((utcnow() - view.rq_last_active).total_seconds() // 60)
    return page(
        request,
        "queues.html",
        session=session,
        view=view,
        rq_idle_minutes=idle,
        dial=state,
        history=history,
        types=list(ReportType),
        error=request.query_params.get("error"),
    )


@router.post("/traffic", name="console_traffic")
async def traffic(request: Request) -> Response:
    session, away = await _signed_in(request)
    if away is not None:
        return away
    container = get_container(request)
    dial = container.traffic
    try:
        fields = await form_of(request, session)
        if not session.principal.sees_all or dial is None:
            raise Forbidden("Only operators move the traffic dial.")
        overrides = {
            t.value: _number(fields[f"override_{t.value}"])
            for t in ReportType
            if fields.get(f"override_{t.value}", "").strip()
        }
        await run_in_threadpool(
            lambda: dial.move(
                actor=session.owner,
                reason=fields.get("reason"),
                celery_percent=_number(fields.get("celery_percent", "")),
                overrides=overrides,
                pinned=fields.get("pinned") == "on",
            )
        )
    except Forbidden as exc:
        return page(request, "error.html", 403, session=session, error=exc)
    except InvalidInput as exc:
        return redirect("/console/queues?" + urlencode({"error": exc.message}))
    return redirect("/console/queues")


def _number(raw: str) -> Any:
    """An integer when the text is one, else the text itself (the domain refuses it)."""
    text = raw.strip()
    return int(text) if text.lstrip("-").isdigit() else text
