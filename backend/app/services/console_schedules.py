"""The console's schedules pages: what they show, and pause / resume.

Built on the schedule services (owner rule, validation, next slot) and the console's
job lookup; a submitter sees and acts on its own schedules only, an operator on all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from app.domain.auth import Principal
from app.domain.console import ConsoleRepository
from app.domain.jobs import ReportJob
from app.domain.ledger import Cursor
from app.domain.schedules import Schedule
from app.services.console import PAGE_SIZE, progress_of
from app.services.deps import Deps
from app.services.schedules import (
    Scheduling,
    get_schedule,
    list_schedules,
    schedule_runs,
    update_schedule,
)

#: The runs a schedule's page lists, newest first.
RUNS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class ScheduleLine:
    """A schedule on the list, with the job of its latest run (None: none, or gone)."""

    schedule: Schedule
    last_job: ReportJob | None


@dataclass(frozen=True, slots=True)
class SchedulesView:
    """A page of schedules, newest first; ``next`` continues it."""

    lines: Sequence[ScheduleLine]
    next: Cursor | None


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """One schedule and its latest runs, newest first."""

    schedule: Schedule
    runs: Sequence[ReportJob]


def schedules_view(
    *, kit: Scheduling, console: ConsoleRepository, caller: Principal, after: Cursor | None
) -> SchedulesView:
    """A page of the schedules the caller may see, each with its last run's job.

    The last runs' jobs come in one query for all of them.
    """
    items, more = list_schedules(kit=kit, owner=caller.scope, limit=PAGE_SIZE, after=after)
    wanted = [s.last_job_id for s in items if s.last_job_id is not None]
    found = progress_of(console=console, caller=caller, job_ids=wanted) if wanted else []
    jobs = {job.id: job for job in found}
    lines = [ScheduleLine(s, jobs.get(s.last_job_id) if s.last_job_id else None) for s in items]
    return SchedulesView(lines, more)


def schedule_view(
    *, deps: Deps, kit: Scheduling, caller: Principal, schedule_id: UUID
) -> ScheduleView:
    """The schedule and its last :data:`RUNS_SHOWN` runs.

    Raises:
        ScheduleNotFound: no such schedule, or another owner's (for a submitter).
    """
    schedule = get_schedule(kit=kit, schedule_id=schedule_id, owner=caller.scope)
    runs = schedule_runs(
        deps=deps,
        kit=kit,
        schedule_id=schedule_id,
        owner=caller.scope,
        limit=RUNS_SHOWN,
        after=None,
    )
    return ScheduleView(schedule, runs.items)


def set_active(
    *, deps: Deps, kit: Scheduling, caller: Principal, schedule_id: UUID, active: bool
) -> Schedule:
    """Pause (``active`` False) or resume it; a resumed schedule runs from its next slot.

    Raises:
        ScheduleNotFound: no such schedule, or another owner's (for a submitter).
    """
    return update_schedule(
        deps=deps, kit=kit, schedule_id=schedule_id, owner=caller.scope, changes={"active": active}
    )
