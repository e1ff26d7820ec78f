"""``/api/v1/admin/traffic``: read and move the traffic dial (operator keys only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.dependencies import Operator, get_container
from app.api.errors import error_responses
from app.api.observability import TrackedRoute
from app.domain.errors import Unavailable
from app.domain.traffic import DialChange, DialState, TrafficSplit
from app.services.traffic import TrafficDial

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], route_class=TrackedRoute)


class SplitOut(BaseModel):
    celery_percent: int = Field(description="Percent of jobs preferring Celery over RQ.")
    overrides: dict[str, int] = Field(description="Per report type percent, over the default.")

    @classmethod
    def of(cls, split: TrafficSplit) -> SplitOut:
        return cls.model_validate(split.as_dict())


class TrafficOut(SplitOut):
    pinned: bool = Field(description="True: the guard leaves the dial alone.")
    version: int = Field(description="Grows with every change.")
    changed_at: datetime
    changed_by: str
    healthy: SplitOut = Field(description="Where an automatic rollback goes.")
    applied_version: int | None = Field(description="The version this API process routes by.")
    guard_enabled: bool


class TrafficIn(BaseModel):
    """Fields left out keep their current value; ``reason`` is required."""

    model_config = ConfigDict(extra="forbid")

    celery_percent: int | None = Field(None, description="0 to 100.", examples=[25])
    overrides: dict[str, int] | None = Field(
        None, description='Per report type percent, e.g. {"pdf": 0}.', examples=[{}]
    )
    pinned: bool | None = Field(None, description="Pin (true) to switch the guard off.")
    reason: str | None = Field(None, description="Why the dial moves (1 to 500 characters).")


class ChangeOut(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str = Field(description="seed, operator or rollback.")
    before: SplitOut | None
    after: SplitOut
    pinned: bool
    reason: str

    @classmethod
    def of(cls, change: DialChange) -> ChangeOut:
        return cls(
            id=change.id,
            at=change.at,
            actor=change.actor,
            kind=change.kind.value,
            before=SplitOut.of(change.before) if change.before else None,
            after=SplitOut.of(change.after),
            pinned=change.pinned,
            reason=change.reason,
        )


class HistoryOut(BaseModel):
    items: list[ChangeOut]


def dial_of(request: Request) -> TrafficDial:
    dial = get_container(request).traffic
    if dial is None:
        raise Unavailable("No traffic dial in this process.", code="TRAFFIC_DIAL_MISSING")
    return dial


def traffic_out(dial: TrafficDial, state: DialState) -> TrafficOut:
    return TrafficOut(
        **SplitOut.of(state.split).model_dump(),
        pinned=state.pinned,
        version=state.version,
        changed_at=state.changed_at,
        changed_by=state.changed_by,
        healthy=SplitOut.of(state.healthy),
        applied_version=dial.applied_version,
        guard_enabled=dial.guard.enabled,
    )


@router.get(
    "/traffic",
    name="get_traffic",
    response_model=TrafficOut,
    responses=error_responses(401, 403),
    summary="The traffic dial: the Celery/RQ split, pin, last healthy value",
)
async def get_traffic(request: Request, _: Operator) -> TrafficOut:
    dial = dial_of(request)
    return traffic_out(dial, await run_in_threadpool(dial.state))


@router.put(
    "/traffic",
    name="set_traffic",
    response_model=TrafficOut,
    responses=error_responses(400, 401, 403, 422),
    summary="Move or pin the traffic dial (audited; every API process applies it in seconds)",
)
async def set_traffic(request: Request, operator: Operator, body: TrafficIn) -> TrafficOut:
    dial = dial_of(request)
    state = await run_in_threadpool(
        lambda: dial.move(
            actor=operator.owner,
            reason=body.reason,
            celery_percent=body.celery_percent,
            overrides=body.overrides,
            pinned=body.pinned,
        )
    )
    return traffic_out(dial, state)


@router.get(
    "/traffic/history",
    name="get_traffic_history",
    response_model=HistoryOut,
    responses=error_responses(401, 403, 422),
    summary="Changes of the traffic dial, newest first",
)
async def get_traffic_history(
    request: Request,
    _: Operator,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HistoryOut:
    dial = dial_of(request)
    changes = await run_in_threadpool(dial.history, limit=limit)
    return HistoryOut(items=[ChangeOut.of(c) for c in changes])
