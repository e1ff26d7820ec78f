"""``/console``: the operators' pages, server-rendered (Jinja2) with one small script.

Every page needs a session (an API key exchanged for an HttpOnly, SameSite=Strict cookie);
every form that changes something carries the session's CSRF token; every answer forbids
framing and inline script. Routes parse and render; the services decide.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api import console_web as web
from app.api.cursor import decode_cursor, encode_cursor
from app.api.dependencies import get_container
from app.api.download import artifact_response
from app.domain.console import ConsoleSession
from app.domain.errors import AppError, Forbidden, InvalidInput, Unauthenticated
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus
from app.services import console as svc
from app.services.auth import require_operator
from app.services.cancel import cancel_job
from app.services.queries import artifact_of, get_job_with_emails

ROOT = web.ROOT
router = APIRouter(prefix="/console", include_in_schema=False)


# --------------------------------------------------------------------------- sign-in


@router.get("", name="console_home", dependencies=[Depends(web.by_address)])
async def home() -> Response:
    return web.redirect("/console/jobs")


@router.get("/sign-in", name="console_sign_in_page", dependencies=[Depends(web.by_address)])
async def sign_in_page(request: Request) -> Response:
    return web.page(request, "sign_in.html", session=None, error=None)


@router.post("/sign-in", name="console_sign_in", dependencies=[Depends(web.by_address)])
async def sign_in(request: Request) -> Response:
    fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
    container = get_container(request)
    try:
        web.check_origin(request)
        token, _ = await run_in_threadpool(web.new_session, container, fields.get("api_key"))
    except (Unauthenticated, Forbidden) as exc:
        status = 403 if isinstance(exc, Forbidden) else 401
        return web.page(request, "sign_in.html", status, session=None, error=exc.message)
    return web.with_cookie(request, web.redirect("/console/jobs"), token)


@router.post("/sign-out", name="console_sign_out")
async def sign_out(request: Request, session: web.Session) -> Response:
    await web.form_of(request, session)
    container = get_container(request)
    token = request.cookies.get(web.COOKIE)
    await run_in_threadpool(svc.sign_out, console=container.console, token=token)
    response = web.redirect("/console/sign-in")
    response.delete_cookie(web.COOKIE, path="/console")
    return response


# --------------------------------------------------------------------------- jobs


@router.get("/jobs", name="console_jobs")
async def jobs(request: Request, session: web.Session) -> Response:
    query = dict(request.query_params)
    try:
        where = web.filters(query)
        after = decode_cursor(query["after"]) if query.get("after") else None
    except InvalidInput as exc:
        return web.page(request, "error.html", 422, session=session, error=exc)
    view = await run_in_threadpool(
        svc.jobs_view,
        console=get_container(request).console,
        caller=session.principal,
        where=where,
        after=after,
    )
    more = None
    if view.page.next is not None:
        cursor = encode_cursor(view.page.next)
        more = urlencode({**{k: v for k, v in query.items() if k != "after"}, "after": cursor})
    return web.page(
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
        session = await web.session_of(request)
        job_ids = [UUID(i) for i in ids.split(",") if i][: svc.PAGE_SIZE]
    except (Unauthenticated, ValueError):
        return web.secured(JSONResponse({"error": "CONSOLE_SIGN_IN"}, status_code=401))
    found = await run_in_threadpool(
        svc.progress_of,
        console=get_container(request).console,
        caller=session.principal,
        job_ids=job_ids,
    )
    body = {
        "jobs": [
            {"id": str(j.id), "status": j.status.value, "progress": j.progress, "stage": j.stage}
            for j in found
        ]
    }
    return web.secured(JSONResponse(body))


@router.get("/jobs/{job_id}", name="console_job")
async def job(request: Request, session: web.Session, job_id: UUID) -> Response:
    container = get_container(request)
    caller = session.principal
    try:
        found, emails = await run_in_threadpool(
            get_job_with_emails, deps=container.deps, job_id=job_id, owner=caller.scope
        )
    except AppError as exc:
        return web.page(request, "error.html", 404, session=session, error=exc)
    reruns = await run_in_threadpool(
        svc.reruns_of, console=container.console, caller=caller, job_id=job_id
    )
    return web.page(
        request,
        "job.html",
        session=session,
        job=found,
        done=found.status.terminal,
        reruns=reruns,
        emails=emails,
    )


@router.get("/jobs/{job_id}/download", name="console_download")
async def download(request: Request, session: web.Session, job_id: UUID) -> Response:
    container = get_container(request)
    deps, settings = container.deps, container.settings
    try:
        artifact = await run_in_threadpool(
            artifact_of, deps=deps, job_id=job_id, owner=session.principal.scope
        )
    except AppError as exc:
        return web.page(request, "error.html", 404, session=session, error=exc)
    seconds = settings.storage.download_url_seconds if settings.storage.download_redirect else 0
    response = await run_in_threadpool(  # the store is asked before the status line
        artifact_response, request, deps.store, artifact, redirect_seconds=seconds
    )
    return web.secured(response)


@router.post("/jobs/{job_id}/cancel", name="console_cancel")
async def cancel(request: Request, session: web.Session, job_id: UUID) -> Response:
    return await _act(request, session, job_id, "cancel")


@router.post("/jobs/{job_id}/run-again", name="console_run_again")
async def run_again(request: Request, session: web.Session, job_id: UUID) -> Response:
    return await _act(request, session, job_id, "run-again")


async def _act(request: Request, session: ConsoleSession, job_id: UUID, action: str) -> Response:
    deps = get_container(request).deps
    caller = session.principal
    try:
        await web.form_of(request, session)
        if action == "cancel":
            await run_in_threadpool(cancel_job, deps=deps, job_id=job_id, owner=caller.scope)
            return web.redirect(f"/console/jobs/{job_id}")
        new = await run_in_threadpool(svc.run_again, deps=deps, caller=caller, job_id=job_id)
    except Forbidden as exc:
        return web.page(request, "error.html", 403, session=session, error=exc)
    except AppError as exc:
        status = 404 if exc.code == "JOB_NOT_FOUND" else 409
        return web.page(request, "error.html", status, session=session, error=exc)
    return web.redirect(f"/console/jobs/{new.id}")


# --------------------------------------------------------------------------- queues & dial


@router.get("/queues", name="console_queues")
async def queues(request: Request, session: web.Session) -> Response:
    container = get_container(request)
    view = await run_in_threadpool(svc.queues_view, deps=container.deps, console=container.console)
    dial = container.traffic
    state = history = None
    if dial is not None and session.principal.sees_all:
        state = await run_in_threadpool(dial.state)
        history = await run_in_threadpool(dial.history, limit=20)
    return web.page(
        request,
        "queues.html",
        session=session,
        view=view,
        dial=state,
        history=history,
        types=list(ReportType),
        error=request.query_params.get("error"),
    )


@router.post("/traffic", name="console_traffic")
async def traffic(request: Request, session: web.Session) -> Response:
    container = get_container(request)
    dial = container.traffic
    try:
        fields = await web.form_of(request, session)
        require_operator(session.principal)
        if dial is None:
            raise Forbidden("No traffic dial in this process.")
        overrides = {
            t.value: web.number(fields[f"override_{t.value}"])
            for t in ReportType
            if fields.get(f"override_{t.value}", "").strip()
        }
        await run_in_threadpool(
            lambda: dial.move(
                actor=session.owner,
                reason=fields.get("reason"),
                celery_percent=web.number(fields.get("celery_percent", "")),
                overrides=overrides,
                pinned=fields.get("pinned") == "on",
            )
        )
    except Forbidden as exc:
        return web.page(request, "error.html", 403, session=session, error=exc)
    except InvalidInput as exc:
        return web.redirect("/console/queues?" + urlencode({"error": exc.message}))
    return web.redirect("/console/queues")


@router.get("/stats", name="console_stats")
async def stats(request: Request, session: web.Session) -> Response:
    """The daily figures Beat computed, as charts (operators, like the API's route)."""
    day = request.query_params.get("day")
    try:
        require_operator(session.principal)
        chosen = date.fromisoformat(day) if day else None
        view = await run_in_threadpool(
            svc.stats_view, ops=get_container(request).housekeeping.ops, day=chosen
        )
    except ValueError:
        error = InvalidInput(f"Not a day: {day!r} (YYYY-MM-DD).", code="INVALID_FILTER")
        return web.page(request, "error.html", 422, session=session, error=error)
    except AppError as exc:
        status = 403 if isinstance(exc, Forbidden) else 404
        return web.page(request, "error.html", status, session=session, error=exc)
    return web.page(request, "stats.html", session=session, view=view)
