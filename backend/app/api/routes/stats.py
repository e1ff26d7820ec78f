"""``GET /api/v1/reports/stats/daily``: the figures Beat stored at midnight."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.dependencies import Operator, get_container
from app.api.errors import error_responses
from app.api.observability import TrackedRoute
from app.services.daily_stats import get_daily_stats

router = APIRouter(prefix="/api/v1/reports/stats", tags=["reports"], route_class=TrackedRoute)


class DailyStatsOut(BaseModel):
    day: date
    computed_at: datetime
    figures: dict[str, Any] = Field(
        description="total, completed, failed, failure_rate, p50_seconds, p95_seconds, "
        "counts (by report_type, status, backend) and by_type (per report_type and backend)."
    )


@router.get(
    "/daily",
    name="get_daily_stats",
    response_model=DailyStatsOut,
    responses=error_responses(401, 403, 404, 422),
    summary="Daily figures of one day (default: the latest computed)",
)
async def daily(
    request: Request,
    _: Operator,
    day: Annotated[date | None, Query(description="YYYY-MM-DD, in the statistics zone")] = None,
) -> DailyStatsOut:
    ops = get_container(request).housekeeping.ops
    stats = await run_in_threadpool(get_daily_stats, ops=ops, day=day)
    return DailyStatsOut(day=stats.day, computed_at=stats.computed_at, figures=dict(stats.figures))
