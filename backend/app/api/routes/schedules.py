"""Schedule routes: a report on a calendar, emailed to its recipients at each slot."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.cursor import decode_cursor, encode_cursor
from app.api.dependencies import Caller, ServiceDeps, get_container
from app.api.errors import error_responses
from app.api.observability import TrackedRoute
from app.api.schemas import JobList
from app.domain.queues import ReportType
from app.domain.schedules import Preset, Schedule
from app.services.schedules import (
    Scheduling,
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    schedule_runs,
    update_schedule,
)

router = APIRouter(prefix="/api/v1/reports/schedules", tags=["schedules"], route_class=TrackedRoute)

_CRON = "5-field cron expression (minute hour day month weekday), in `timezone`."
_CLEARABLE = frozenset({"cron", "preset", "at", "timezone"})
_PRESET = "Instead of `cron`: daily, weekly (Mondays) or monthly (the 1st), at `at`."


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, min_length=1, max_length=200)
    report_type: ReportType | None = None
    params: dict[str, Any] | None = Field(
        None, description="The report's parameters, exactly as an enqueue takes them."
    )
    cron: str | None = Field(None, max_length=120, description=_CRON)
    preset: Preset | None = Field(None, description=_PRESET)
    at: str | None = Field(None, max_length=5, description="The preset's time of day, HH:MM.")
    timezone: str | None = Field(
        None, max_length=64, description="IANA time zone; default STATS_TIMEZONE."
    )
    recipients: list[str] | None = Field(
        None, max_length=500, description="Who receives each run's email."
    )
    attach: bool | None = Field(
        None, description="Attach the report (under the size limit) or send a download link."
    )
    active: bool | None = Field(None, description="False pauses it.")

    def given(self) -> dict[str, Any]:
        """The fields sent; a null clears the calendar's fields and means "unchanged" (or the
        default) for the others."""
        sent = self.model_dump(exclude_unset=True)
        return {k: v for k, v in sent.items() if v is not None or k in _CLEARABLE}


class ScheduleIn(_Fields):
    """A new schedule: `name`, `report_type`, `recipients`, and `cron` or `preset` + `at`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Monthly claims PDF",
                    "report_type": "pdf",
                    "params": {"pages": 50},
                    "preset": "monthly",
                    "at": "06:00",
                    "timezone": "Europe/Paris",
                    "recipients": ["claims-team@example.com"],
                }
            ]
        }
    )
    name: str = Field(min_length=1, max_length=200)
    report_type: ReportType


class ScheduleChange(_Fields):
    """The fields to change; the others stay. `active: false` pauses, `true` resumes."""


class ScheduleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    owner: str | None
    name: str
    report_type: ReportType
    params: dict[str, Any]
    cron: str
    preset: Preset | None
    at: str | None
    timezone: str
    recipients: list[str]
    attach: bool
    active: bool
    next_run_at: datetime | None = Field(description="The next slot (null while paused).")
    last_slot: datetime | None
    last_job_id: UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        return cls.model_validate(schedule)


class ScheduleList(BaseModel):
    items: list[ScheduleOut]
    next: str | None = Field(description="Cursor for the next page; null on the last page.")


def _kit(request: Request) -> Scheduling:
    return get_container(request).scheduling


Cursor = Annotated[str | None, Query(description="`next` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    responses=error_responses(400, 401, 413, 422),
    summary="Create a schedule",
)
async def create(request: Request, deps: ServiceDeps, caller: Caller, body: ScheduleIn) -> Any:
    """Validated as an enqueue is (type, parameters, recipients), plus its calendar."""
    schedule = await run_in_threadpool(
        create_schedule, deps=deps, kit=_kit(request), owner=caller.owner, fields=body.given()
    )
    return ScheduleOut.of(schedule)


@router.get(
    "",
    name="list_schedules",
    response_model=ScheduleList,
    responses=error_responses(401, 422),
    summary="List schedules, newest first",
)
async def index(request: Request, caller: Caller, limit: Limit = 20, cursor: Cursor = None) -> Any:
    """The caller's schedules (an operator's: everyone's)."""
    items, after = await run_in_threadpool(
        list_schedules,
        kit=_kit(request),
        owner=caller.scope,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    return ScheduleList(
        items=[ScheduleOut.of(s) for s in items], next=encode_cursor(after) if after else None
    )


@router.get(
    "/{schedule_id}",
    name="get_schedule",
    response_model=ScheduleOut,
    responses=error_responses(401, 404, 422),
    summary="One schedule",
)
async def show(request: Request, caller: Caller, schedule_id: UUID) -> Any:
    schedule = await run_in_threadpool(
        get_schedule, kit=_kit(request), schedule_id=schedule_id, owner=caller.scope
    )
    return ScheduleOut.of(schedule)


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleOut,
    responses=error_responses(400, 401, 404, 413, 422),
    summary="Change, pause or resume a schedule",
)
async def change(
    request: Request, deps: ServiceDeps, caller: Caller, schedule_id: UUID, body: ScheduleChange
) -> Any:
    """Takes effect at the next tick; a resumed schedule fires from its next slot on."""
    schedule = await run_in_threadpool(
        update_schedule,
        deps=deps,
        kit=_kit(request),
        schedule_id=schedule_id,
        owner=caller.scope,
        changes=body.given(),
    )
    return ScheduleOut.of(schedule)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    responses=error_responses(401, 404, 422),
    summary="Delete a schedule (its runs stay)",
)
async def remove(request: Request, caller: Caller, schedule_id: UUID) -> Response:
    await run_in_threadpool(
        delete_schedule, kit=_kit(request), schedule_id=schedule_id, owner=caller.scope
    )
    return Response(status_code=204)


@router.get(
    "/{schedule_id}/runs",
    name="schedule_runs",
    response_model=JobList,
    responses=error_responses(401, 404, 422),
    summary="The jobs a schedule ran, newest first",
)
async def runs(
    request: Request,
    deps: ServiceDeps,
    caller: Caller,
    schedule_id: UUID,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Any:
    page = await run_in_threadpool(
        schedule_runs,
        deps=deps,
        kit=_kit(request),
        schedule_id=schedule_id,
        owner=caller.scope,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    return JobList.of(page)
