"""``/console/schedules``: the schedules pages of the console, and pause / resume.

Same rules as the other console pages: a session for every page and action, the session's
CSRF token on every form, a submitter sees its own schedules only (another's is a 404).
"""

from __future__ import annotations

from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api import console_web as web
from app.api.cursor import decode_cursor, encode_cursor
from app.api.dependencies import get_container
from app.domain.console import ConsoleSession
from app.domain.errors import AppError, Forbidden, InvalidInput, NotFound
from app.services import console_schedules as svc

router = APIRouter(prefix="/console", include_in_schema=False)

#: What a page says after an action (only these: the query names one, never its text).
NOTICES = {
    "paused": "Paused: it runs no more until resumed.",
    "resumed": "Resumed: it runs from its next slot on.",
}


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


@router.get("/schedules", name="console_schedules")
async def schedules(request: Request, session: web.Session) -> Response:
    raw = request.query_params.get("after")
    try:
        after = decode_cursor(raw) if raw else None
    except InvalidInput as exc:
        return web.page(request, "error.html", 422, session=session, error=exc)
    container = get_container(request)
    view = await run_in_threadpool(
        svc.schedules_view,
        kit=container.scheduling,
        console=container.console,
        caller=session.principal,
        after=after,
    )
    more = urlencode({"after": encode_cursor(view.next)}) if view.next else None
    return web.page(
        request,
        "schedules.html",
        session=session,
        view=view,
        next_query=more,
        notice=_notice(request),
    )


@router.get("/schedules/{schedule_id}", name="console_schedule")
async def schedule(request: Request, session: web.Session, schedule_id: UUID) -> Response:
    container = get_container(request)
    try:
        view = await run_in_threadpool(
            svc.schedule_view,
            deps=container.deps,
            kit=container.scheduling,
            caller=session.principal,
            schedule_id=schedule_id,
        )
    except AppError as exc:
        return web.page(request, "error.html", 404, session=session, error=exc)
    return web.page(request, "schedule.html", session=session, view=view, notice=_notice(request))


@router.post("/schedules/{schedule_id}/pause", name="console_schedule_pause")
async def pause(request: Request, session: web.Session, schedule_id: UUID) -> Response:
    return await _switch(request, session, schedule_id, active=False)


@router.post("/schedules/{schedule_id}/resume", name="console_schedule_resume")
async def resume(request: Request, session: web.Session, schedule_id: UUID) -> Response:
    return await _switch(request, session, schedule_id, active=True)


async def _switch(
    request: Request, session: ConsoleSession, schedule_id: UUID, *, active: bool
) -> Response:
    """Pause or resume, then back to the page the form was on (``back``: list or detail)."""
    container = get_container(request)
    try:
        fields = await web.form_of(request, session)
        await run_in_threadpool(
            svc.set_active,
            deps=container.deps,
            kit=container.scheduling,
            caller=session.principal,
            schedule_id=schedule_id,
            active=active,
        )
    except Forbidden as exc:
        return web.page(request, "error.html", 403, session=session, error=exc)
    except NotFound as exc:
        return web.page(request, "error.html", 404, session=session, error=exc)
    except InvalidInput as exc:  # it no longer passes (e.g. a raised frequency floor)
        return web.page(request, "error.html", 422, session=session, error=exc)
    target = (
        "/console/schedules"
        if fields.get("back") == "list"
        else (f"/console/schedules/{schedule_id}")
    )
    notice = urlencode({"notice": "resumed" if active else "paused"})
    return web.redirect(f"{target}?{notice}")
