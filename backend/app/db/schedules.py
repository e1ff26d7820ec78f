"""The SQL side of schedules: the ``report_schedules`` table, one transaction a call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.engine import Row

from app.db.models import ScheduleRow
from app.db.paging import keyset_rows
from app.domain.ledger import Cursor
from app.domain.queues import ReportType
from app.domain.schedules import Preset, Schedule

_S = cast(Table, ScheduleRow.__table__)


class SqlScheduleRepository:
    """:class:`~app.domain.schedules.ScheduleRepository` in SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def add(self, schedule: Schedule) -> None:
        """Insert a new schedule row."""
        with self._engine.connect() as conn:
            conn.execute(insert(_S), _to_values(schedule))

    def get(self, schedule_id: UUID) -> Schedule | None:
        """The schedule, whoever owns it; None when no row has this id."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_S).where(_S.c.id == schedule_id)).first()
        return _to_schedule(row) if row is not None else None

    def page(
        self, owner: str | None, *, limit: int, after: Cursor | None
    ) -> tuple[list[Schedule], Cursor | None]:
        """One page of ``owner``'s schedules (everyone's for None), newest first.

        Returns:
            The page, and the cursor of the next one (None on the last page).
        """
        stmt = select(_S)
        if owner is not None:
            stmt = stmt.where(_S.c.owner == owner)
        rows, more = keyset_rows(self._engine, stmt, _S, limit=limit, after=after)
        items = [_to_schedule(r) for r in rows]
        return items, Cursor(items[-1].created_at, items[-1].id) if more and items else None

    def replace(self, schedule: Schedule) -> Schedule | None:
        """Write every field of ``schedule`` over its row; None when the row is gone."""
        values = _to_values(schedule)
        stmt = update(_S).where(_S.c.id == schedule.id).values(values).returning(*_S.c)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _to_schedule(row) if row is not None else None

    def delete(self, schedule_id: UUID) -> bool:
        """Delete the row; False when no schedule had this id."""
        with self._engine.connect() as conn:
            return conn.execute(delete(_S).where(_S.c.id == schedule_id)).rowcount > 0

    def due(self, now: datetime, *, limit: int) -> Sequence[Schedule]:
        """Active schedules whose next slot is at or before ``now``, earliest first."""
        stmt = (
            select(_S)
            .where(_S.c.active.is_(True), _S.c.next_run_at <= now)
            .order_by(_S.c.next_run_at)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_to_schedule(r) for r in conn.execute(stmt)]

    def advance(
        self,
        schedule_id: UUID,
        *,
        expected: datetime,
        next_run_at: datetime,
        last_slot: datetime,
        last_job_id: UUID | None,
    ) -> bool:
        """Move the schedule to its next slot, unless another ticker (or an edit) moved it."""
        stmt = (
            update(_S)
            .where(_S.c.id == schedule_id, _S.c.next_run_at == expected)
            .values(next_run_at=next_run_at, last_slot=last_slot, last_job_id=last_job_id)
        )
        with self._engine.connect() as conn:
            return conn.execute(stmt).rowcount > 0


def _to_values(schedule: Schedule) -> dict[str, Any]:
    values = asdict(schedule)
    values.update(
        report_type=schedule.report_type.value,
        recipients=list(schedule.recipients),
        preset=schedule.preset.value if schedule.preset else None,
    )
    return values


def _to_schedule(row: Row[Any]) -> Schedule:
    return Schedule(
        id=row.id,
        owner=row.owner,
        name=row.name,
        report_type=ReportType(row.report_type),
        params=dict(row.params),
        cron=row.cron,
        timezone=row.timezone,
        recipients=tuple(row.recipients),
        attach=row.attach,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        preset=Preset(row.preset) if row.preset else None,
        at=row.at,
        next_run_at=row.next_run_at,
        last_slot=row.last_slot,
        last_job_id=row.last_job_id,
    )
