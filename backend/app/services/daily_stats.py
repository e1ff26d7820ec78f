"""Daily figures: counts by type, status and backend, p50/p95 run times, failure rate.

Beat computes them at midnight (statistics time zone, Europe/Paris by default) for the day
that just ended — the jobs *created* that day, with the status they have then — and the
API serves the stored figures.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.domain.errors import NotFound
from app.domain.operations import DailyStats, HousekeepingRepository, JobTiming
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.housekeeping import DAILY, Housekeeping, PeriodicOutcome, run_periodic

_TIMED = (JobStatus.COMPLETED, JobStatus.FAILED)


class StatsNotFound(NotFound):
    """No figures are stored for the day asked (or none at all yet)."""

    code = "STATS_NOT_FOUND"


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in ``zone``, in UTC (23 or 25 hours on DST days)."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def compute_daily_stats(
    *, deps: Deps, kit: Housekeeping, day: date | None = None
) -> PeriodicOutcome:
    """Compute and store the figures of ``day`` (default: yesterday in the statistics zone)."""
    zone = kit.policy.zone
    if day is None:
        day = deps.clock().astimezone(ZoneInfo(zone)).date() - timedelta(days=1)
    start, end = day_bounds(day, zone)

    def store() -> dict[str, Any]:
        figures = daily_figures(kit.ops.timings(start, end), day=day, zone=zone)
        kit.ops.save_daily_stats(day, figures, now=deps.clock())
        return {"day": day.isoformat(), "total": figures["total"]}

    return run_periodic(deps=deps, kit=kit, task=DAILY, slot=start, action=store)


def get_daily_stats(*, ops: HousekeepingRepository, day: date | None = None) -> DailyStats:
    """The stored figures of ``day`` (default: the latest day computed).

    Raises:
        StatsNotFound: none stored for ``day`` (or none at all yet).
    """
    stats = ops.daily_stats(day)
    if stats is None:
        raise StatsNotFound(
            f"No daily figures for {day.isoformat()}." if day else "No daily figures yet."
        )
    return stats


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated ``q`` quantile (0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _summary(durations: Sequence[float], completed: int, failed: int) -> dict[str, Any]:
    p50, p95 = percentile(durations, 0.5), percentile(durations, 0.95)
    return {
        "completed": completed,
        "failed": failed,
        "failure_rate": round(failed / (completed + failed), 4) if completed + failed else None,
        "p50_seconds": round(p50, 3) if p50 is not None else None,
        "p95_seconds": round(p95, 3) if p95 is not None else None,
    }


def daily_figures(timings: Sequence[JobTiming], *, day: date, zone: str) -> dict[str, Any]:
    """The figures of one day's jobs (pure: no I/O)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    outcomes: dict[tuple[str, str], Counter[JobStatus]] = defaultdict(Counter)
    for t in timings:
        backend = t.backend.value if t.backend else "none"
        counts[(t.report_type.value, t.status.value, backend)] += 1
        key = (t.report_type.value, backend)
        outcomes[key][t.status] += 1
        if t.status in _TIMED and t.started_at and t.finished_at:
            durations[key].append((t.finished_at - t.started_at).total_seconds())
    every = [d for values in durations.values() for d in values]
    completed = sum(o[JobStatus.COMPLETED] for o in outcomes.values())
    failed = sum(o[JobStatus.FAILED] for o in outcomes.values())
    return {
        "day": day.isoformat(),
        "timezone": zone,
        "total": len(timings),
        **_summary(every, completed, failed),
        "counts": [
            {"report_type": rt, "status": st, "backend": be, "count": n}
            for (rt, st, be), n in sorted(counts.items())
        ],
        "by_type": [
            {
                "report_type": rt,
                "backend": be,
                **_summary(
                    durations[(rt, be)],
                    outcomes[(rt, be)][JobStatus.COMPLETED],
                    outcomes[(rt, be)][JobStatus.FAILED],
                ),
            }
            for rt, be in sorted(outcomes)
        ],
    }
