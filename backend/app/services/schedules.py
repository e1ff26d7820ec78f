"""Schedules: create, change, pause, delete; and fire the due slots, once each.

A schedule is validated exactly as an enqueue is (report type, parameters, recipients),
plus its calendar (cron or preset, time zone, the frequency floor). Firing is done by
whichever ticker runs (Beat, RQ's cron scheduler, the API's ticker): each due slot
becomes one job through :func:`~app.services.enqueue.enqueue_report`, the ledger's unique
(schedule, slot) refusing a second one, then the schedule moves to its next slot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from app.domain.errors import AppError, NotFound, SlotTaken
from app.domain.jobs import Slot
from app.domain.ledger import Cursor, JobFilter, JobPage
from app.domain.mail import check_recipients
from app.domain.params import parse_params
from app.domain.queues import ReportType
from app.domain.schedules import (
    InvalidSchedule,
    Preset,
    Schedule,
    ScheduleRepository,
    check_cron,
    latest_slot,
    shortest_gap,
    zone_of,
)
from app.services.deps import Deps
from app.services.enqueue import enqueue_report

log = logging.getLogger(__name__)

#: Schedules one tick fires at most (the next tick takes the rest).
FIRE_BATCH = 100


class ScheduleNotFound(NotFound):
    """No schedule has this id, or it is another owner's."""

    code = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule_id: UUID) -> None:
        super().__init__(f"No schedule {schedule_id}.")


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The floor on a schedule's frequency, and the time zone when none is given."""

    min_interval: timedelta = timedelta(hours=1)
    default_zone: str = "Europe/Paris"


@dataclass(frozen=True, slots=True)
class Scheduling:
    """What the schedule services need besides :class:`Deps`."""

    repo: ScheduleRepository
    policy: SchedulePolicy


#: The fields a caller may set, and their values when a new schedule leaves them out.
DEFAULTS: dict[str, Any] = {
    "params": {},
    "cron": None,
    "preset": None,
    "at": None,
    "timezone": None,
    "recipients": (),
    "attach": True,
    "active": True,
}
FIELDS = frozenset({"name", "report_type", *DEFAULTS})


def create_schedule(
    *, deps: Deps, kit: Scheduling, owner: str | None, fields: Mapping[str, Any]
) -> Schedule:
    """A new schedule from ``fields`` (name and report_type required; see :data:`DEFAULTS`).

    Raises:
        InvalidSchedule, InvalidParams, InvalidRecipients: a field is invalid (named).
    """
    now = deps.clock()
    draft = {**DEFAULTS, **fields}
    schedule = _checked(deps, kit, owner=owner, now=now, created_at=now, id=uuid4(), **draft)
    kit.repo.add(schedule)
    log.info("schedule.created", extra={"schedule_id": str(schedule.id), "cron": schedule.cron})
    return schedule


def update_schedule(
    *, deps: Deps, kit: Scheduling, schedule_id: UUID, owner: str | None, changes: Mapping[str, Any]
) -> Schedule:
    """Apply ``changes``; the next tick fires by the new calendar (no catch-up of a pause).

    Raises:
        ScheduleNotFound: no such schedule, or another owner's.
        InvalidSchedule, InvalidParams, InvalidRecipients: a field is invalid (named).
    """
    current = get_schedule(kit=kit, schedule_id=schedule_id, owner=owner)
    draft = {name: getattr(current, name) for name in FIELDS}
    # The calendar is a cron expression or a preset: the one given replaces the other.
    if current.preset is not None or {"preset", "at"} & changes.keys():
        draft["cron"] = None
    if "cron" in changes:
        draft["preset"] = draft["at"] = None
    draft |= changes
    schedule = _checked(
        deps,
        kit,
        owner=current.owner,
        now=deps.clock(),
        created_at=current.created_at,
        id=current.id,
        last_slot=current.last_slot,
        last_job_id=current.last_job_id,
        **draft,
    )
    updated = kit.repo.replace(schedule)
    if updated is None:
        raise ScheduleNotFound(schedule_id)
    log.info("schedule.updated", extra={"schedule_id": str(schedule_id), "fields": sorted(changes)})
    return updated


def delete_schedule(*, kit: Scheduling, schedule_id: UUID, owner: str | None) -> None:
    """Delete it; its runs (jobs) stay in the ledger.

    Raises:
        ScheduleNotFound: no such schedule, or another owner's.
    """
    get_schedule(kit=kit, schedule_id=schedule_id, owner=owner)
    if not kit.repo.delete(schedule_id):
        raise ScheduleNotFound(schedule_id)
    log.info("schedule.deleted", extra={"schedule_id": str(schedule_id)})


def get_schedule(*, kit: Scheduling, schedule_id: UUID, owner: str | None) -> Schedule:
    """The schedule; ``owner`` None sees every owner's (an operator).

    Raises:
        ScheduleNotFound: no such schedule, or another owner's.
    """
    schedule = kit.repo.get(schedule_id)
    if schedule is None or (owner is not None and schedule.owner != owner):
        raise ScheduleNotFound(schedule_id)
    return schedule


def list_schedules(
    *, kit: Scheduling, owner: str | None, limit: int, after: Cursor | None
) -> tuple[list[Schedule], Cursor | None]:
    """One page of ``owner``'s schedules (everyone's for None), newest first.

    Returns:
        The page, and the cursor of the next one (None on the last page).
    """
    return kit.repo.page(owner, limit=limit, after=after)


def schedule_runs(
    *,
    deps: Deps,
    kit: Scheduling,
    schedule_id: UUID,
    owner: str | None,
    limit: int,
    after: Cursor | None,
) -> JobPage:
    """The jobs the schedule ran, newest first.

    Raises:
        ScheduleNotFound: no such schedule, or another owner's.
    """
    schedule = get_schedule(kit=kit, schedule_id=schedule_id, owner=owner)
    where = JobFilter(schedule_id=schedule.id, owner=owner)
    return deps.repo.list_jobs(where, limit=limit, after=after)


def _checked(
    deps: Deps,
    kit: Scheduling,
    *,
    now: datetime,
    name: str,
    report_type: Any,
    params: Mapping[str, Any],
    cron: str | None,
    preset: Preset | str | None,
    at: str | None,
    timezone: str | None,
    recipients: Sequence[str],
    active: bool,
    **rest: Any,
) -> Schedule:
    """The schedule these fields make, validated as an enqueue is, with its next slot."""
    report_type = ReportType(report_type)
    typed = parse_params(report_type, dict(params)).model_dump(mode="json")
    addresses = check_recipients(recipients, limit=deps.policy.max_recipients)
    if not addresses:
        raise InvalidSchedule("recipients", "a schedule needs at least one address.")
    if (cron is None) == (preset is None):
        raise InvalidSchedule("cron", "give either a cron expression or a preset (with at).")
    if preset is not None:
        preset = Preset(preset)
        if at is None:
            raise InvalidSchedule("at", "a preset needs its time of day (HH:MM).")
        cron = preset.cron(at)
    elif at is not None:
        raise InvalidSchedule("at", "only a preset takes a time of day.")
    assert cron is not None
    cron = check_cron(cron)
    gap = shortest_gap(cron)
    if gap < kit.policy.min_interval:
        raise InvalidSchedule(
            "cron",
            f"{cron!r} fires every {gap.total_seconds():g} s at times; the floor is "
            f"{kit.policy.min_interval.total_seconds():g} s (SCHEDULE_MIN_INTERVAL_SECONDS).",
        )
    zone = timezone or kit.policy.default_zone
    schedule = Schedule(
        name=name,
        report_type=report_type,
        params=typed,
        cron=cron,
        preset=preset,
        at=at,
        timezone=zone_of(zone).key,
        recipients=addresses,
        active=active,
        updated_at=now,
        **rest,
    )
    return replace(schedule, next_run_at=schedule.next_after(now) if active else None)


# --------------------------------------------------------------------------- firing


def fire_due(*, deps: Deps, kit: Scheduling) -> dict[str, int]:
    """Turn every due slot into its job (once, whoever else fires it).

    Then move each schedule to its next slot. After downtime only the latest missed slot
    runs.

    Returns:
        How many schedules ``fired``, were ``taken`` by another ticker or ``failed``, and
        how many slots were ``missed``.
    """
    now = deps.clock()
    counts = {"fired": 0, "taken": 0, "failed": 0, "missed": 0}
    for schedule in kit.repo.due(now, limit=FIRE_BATCH):
        assert schedule.next_run_at is not None
        slot, skipped = latest_slot(schedule.cron, schedule.zone, schedule.next_run_at, now)
        kind, job_id = _run(deps, schedule, slot)
        counts[kind] += 1
        counts["missed"] += skipped
        if skipped:
            log.warning(
                "schedule.missed",
                extra={"schedule_id": str(schedule.id), "missed": skipped, "slot": str(slot)},
            )
        kit.repo.advance(
            schedule.id,
            expected=schedule.next_run_at,
            next_run_at=schedule.next_after(now),
            last_slot=slot,
            last_job_id=job_id or schedule.last_job_id,
        )
    return counts


def _run(deps: Deps, schedule: Schedule, slot: datetime) -> tuple[str, UUID | None]:
    """Enqueue the slot's job.

    Returns:
        ``fired`` with its id, ``taken`` when another ticker made it first, ``failed``
        when it could not be made or sent (logged).
    """
    extra = {"schedule_id": str(schedule.id), "slot": slot.isoformat()}
    try:
        job = enqueue_report(
            deps=deps,
            report_type=schedule.report_type,
            params=schedule.params,
            owner=schedule.owner,
            recipients=schedule.recipients,
            attach_file=schedule.attach,
            slot=Slot(schedule.id, slot),
        ).job
    except SlotTaken:
        return "taken", None
    except AppError as exc:
        # Unavailable: the job's row is there, failed with the code (the run's record).
        # Anything else: the schedule's fields no longer pass; the next slot tries again.
        log.error("schedule.fire.failed", extra={**extra, "error": exc.code})
        return "failed", None
    log.info("schedule.fired", extra={**extra, "job_id": str(job.id)})
    return "fired", job.id
