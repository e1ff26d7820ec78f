"""Report schedules: a report on a calendar, and the clock that says when each slot falls.

A schedule fires at local wall-clock times of its IANA time zone, given by a 5-field cron
expression (or a preset resolved to one). Each due time is a *slot*: an instant in UTC,
unique per schedule, so the ledger can hold one job per (schedule, slot) whichever ticker
fires it. Daylight saving is handled on wall times:

- a wall time that does not exist (the clock jumps forward over it) fires once, at the
  first minute after the jump (02:30 on the spring day fires at 03:00);
- a wall time that occurs twice (the clock goes back over it) fires once, at its first
  occurrence;

so no day loses or doubles a run. After downtime a schedule fires once, for the most
recent slot it missed (the catch-up rule); the earlier missed slots are counted, not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from app.domain.errors import InvalidInput
from app.domain.ledger import Cursor
from app.domain.queues import ReportType

#: How far the catch-up rule counts missed slots before it says "at least this many".
MAX_COUNTED_MISSES = 1000
#: Fires looked at to find a schedule's shortest gap (a year of a daily schedule).
_GAP_SAMPLE = 400


class InvalidSchedule(InvalidInput):
    """A schedule field that cannot be used; ``field`` names it."""

    code = "INVALID_SCHEDULE"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", code=self.code)
        self.field = field


class Preset(StrEnum):
    """Named calendars: each is a cron expression once its time of day is known."""

    DAILY = "daily"
    WEEKLY = "weekly"  # Mondays
    MONTHLY = "monthly"  # the 1st of the month

    def cron(self, at: str) -> str:
        """The cron expression of this preset at ``at`` (``HH:MM``, 24-hour)."""
        try:
            hour, minute = (int(part) for part in at.split(":"))
        except ValueError:
            hour = minute = -1
        if not (0 <= hour <= 23 and 0 <= minute <= 59) or len(at) != 5:
            raise InvalidSchedule("at", f"a time of day as HH:MM, not {at!r}.")
        day = {Preset.DAILY: "* * *", Preset.WEEKLY: "* * 1", Preset.MONTHLY: "1 * *"}[self]
        return f"{minute} {hour} {day}"


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        InvalidSchedule: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(
            "timezone", f"unknown time zone {name!r} (an IANA name, such as Europe/Paris)."
        ) from exc


def check_cron(expression: str) -> str:
    """``expression`` normalised (single spaces), if it is a valid 5-field cron expression.

    Raises:
        InvalidSchedule: not five fields, or a field out of range.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidSchedule(
            "cron",
            f"5 fields (minute hour day month weekday), not {len(fields)}.",
        )
    normal = " ".join(fields)
    try:
        croniter(normal, datetime(2026, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidSchedule("cron", f"invalid expression {normal!r}: {exc}.") from exc
    return normal


def to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive local ``wall`` time fires at (the rules of the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant  # exists (first occurrence if it occurs twice)
    # In a gap: the first whole minute that exists after it.
    probe = wall.replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        moved = probe.replace(tzinfo=zone).astimezone(UTC)
        if moved.astimezone(zone).replace(tzinfo=None) == probe:
            return moved
    raise AssertionError(f"no valid local time after {wall} in {zone}")  # pragma: no cover


def next_slot(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first slot strictly after the instant ``after``."""
    # Start two hours back on the wall clock: around a change the local reading of
    # ``after`` may come after wall times whose instants are still ahead of it.
    wall = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=2)
    times = croniter(cron, wall)
    while True:
        slot = to_utc(times.get_next(datetime), zone)
        if slot > after:
            return slot


def latest_slot(cron: str, zone: ZoneInfo, since: datetime, now: datetime) -> tuple[datetime, int]:
    """The catch-up rule: the most recent slot in ``[since, now]`` and how many it leaves unrun.

    ``since`` is a slot. The unrun slots of that range are counted up to
    :data:`MAX_COUNTED_MISSES`.
    """
    slot, missed = since, 0
    while missed < MAX_COUNTED_MISSES:
        later = next_slot(cron, zone, slot)
        if later > now:
            return slot, missed
        slot, missed = later, missed + 1
    wall = now.astimezone(zone).replace(tzinfo=None) + timedelta(hours=2)
    times = croniter(cron, wall)
    while (slot := to_utc(times.get_prev(datetime), zone)) > now:
        pass
    return slot, missed


def shortest_gap(cron: str) -> timedelta:
    """The shortest time between two fires of ``cron`` on the wall clock."""
    times = croniter(cron, datetime(2026, 1, 1))
    fires: list[datetime] = [times.get_next(datetime) for _ in range(_GAP_SAMPLE)]
    return min(b - a for a, b in pairwise(fires))


@dataclass(frozen=True, slots=True)
class Schedule:
    """A report on a calendar, as the ledger has it.

    Attributes:
        cron: The 5-field expression it fires on (a preset's, when ``preset`` is set).
        at: The preset's time of day (``HH:MM``), or None for a plain cron expression.
        recipients: Who receives each run's email.
        attach: Attach the report file (under the size limit) or send a link.
        next_run_at: The next slot to fire (None while paused).
        last_slot: The slot of its latest run.
        last_job_id: The job of its latest run.
    """

    id: UUID
    owner: str | None
    name: str
    report_type: ReportType
    params: dict[str, Any]
    cron: str
    timezone: str
    recipients: tuple[str, ...]
    attach: bool
    active: bool
    created_at: datetime
    updated_at: datetime
    preset: Preset | None = None
    at: str | None = None
    next_run_at: datetime | None = None
    last_slot: datetime | None = None
    last_job_id: UUID | None = None

    @property
    def zone(self) -> ZoneInfo:
        """Its ``timezone`` as a :class:`ZoneInfo`."""
        return zone_of(self.timezone)

    def next_after(self, instant: datetime) -> datetime:
        """Its first slot after ``instant``."""
        return next_slot(self.cron, self.zone, instant)


class ScheduleRepository(Protocol):
    """The ledger's schedules; every call is its own transaction."""

    def add(self, schedule: Schedule) -> None:
        """Insert a new schedule."""
        ...

    def get(self, schedule_id: UUID) -> Schedule | None:
        """The schedule, whoever owns it; None when no schedule has this id."""
        ...

    def page(
        self, owner: str | None, *, limit: int, after: Cursor | None
    ) -> tuple[list[Schedule], Cursor | None]:
        """One page of ``owner``'s schedules (everyone's for None), newest first."""
        ...

    def replace(self, schedule: Schedule) -> Schedule | None:
        """Write every field over the row; None when the row is gone."""
        ...

    def delete(self, schedule_id: UUID) -> bool:
        """Delete the schedule; False when no schedule had this id."""
        ...

    def due(self, now: datetime, *, limit: int) -> Sequence[Schedule]:
        """Active schedules whose next slot is at or before ``now``, earliest first."""
        ...

    def advance(
        self,
        schedule_id: UUID,
        *,
        expected: datetime,
        next_run_at: datetime,
        last_slot: datetime,
        last_job_id: UUID | None,
    ) -> bool:
        """Move to ``next_run_at`` if the row's is still ``expected``; False otherwise."""
        ...
