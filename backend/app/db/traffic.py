"""The SQL traffic repository: the dial's row, its audit trail, the guard's window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ReportJobRow, TrafficChangeRow, TrafficDialRow
from app.domain.queues import Backend
from app.domain.states import JobStatus
from app.domain.traffic import (
    ChangeKind,
    DialChange,
    DialState,
    TrafficSplit,
    WindowJob,
)

_DIAL_ID = 1
_BROKERED = (Backend.CELERY.value, Backend.RQ.value)


class SqlTrafficRepository:
    """:class:`~app.domain.traffic.TrafficRepository` over SQLAlchemy (PostgreSQL or SQLite)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def current(self) -> DialState | None:
        """The dial, or None before it was first seeded."""
        with self._sessions() as session:
            row = session.get(TrafficDialRow, _DIAL_ID)
            return _to_state(row) if row else None

    def seed(self, split: TrafficSplit, *, now: datetime) -> tuple[DialState, bool]:
        """Create the dial at ``split`` (audited as a seed) unless it exists.

        Returns:
            The dial, and whether this call created it (False when another process did).
        """
        created = False
        try:
            with self._sessions.begin() as session:
                if session.get(TrafficDialRow, _DIAL_ID) is None:
                    session.add(
                        TrafficDialRow(
                            id=_DIAL_ID,
                            split=split.as_dict(),
                            healthy=split.as_dict(),
                            pinned=False,
                            version=1,
                            changed_at=now,
                            changed_by="environment",
                        )
                    )
                    session.flush()  # the dial first: a second seeder fails here, not below
                    session.add(
                        _change_row(
                            now, "environment", ChangeKind.SEED, None, split, False, "first value"
                        )
                    )
                    created = True
        except IntegrityError:
            created = False  # another process seeded it at the same moment: theirs stands
        state = self.current()
        assert state is not None
        return state, created

    def change(
        self,
        split: TrafficSplit,
        *,
        pinned: bool,
        actor: str,
        kind: ChangeKind,
        reason: str,
        now: datetime,
        expected_version: int | None = None,
        healthy: TrafficSplit | None = None,
    ) -> tuple[DialState, DialChange] | None:
        """Move the dial and audit the change in one transaction, with the row locked.

        ``healthy`` also replaces the last healthy value. None when the dial is no longer at
        ``expected_version`` (another replica's guard or an operator got there first).
        """
        with self._sessions.begin() as session:
            stmt = select(TrafficDialRow).where(TrafficDialRow.id == _DIAL_ID).with_for_update()
            row = session.scalars(stmt).first()
            if row is None or (expected_version is not None and row.version != expected_version):
                return None
            before = TrafficSplit.from_dict(row.split)
            row.split = split.as_dict()
            row.pinned = pinned
            if healthy is not None:
                row.healthy = healthy.as_dict()
            row.version += 1
            row.changed_at = now
            row.changed_by = actor
            change = _change_row(now, actor, kind, before, split, pinned, reason)
            session.add(change)
            session.flush()
            return _to_state(row), _to_change(change)

    def mark_healthy(self, split: TrafficSplit, *, version: int) -> bool:
        """Remember ``split`` as the last healthy value if the dial is still at ``version``."""
        t = TrafficDialRow
        stmt = (
            update(t)
            .where(t.id == _DIAL_ID, t.version == version)
            .values(healthy=split.as_dict())
            .returning(t.id)
        )
        with self._sessions.begin() as session:
            return session.execute(stmt).first() is not None

    def history(self, *, limit: int) -> Sequence[DialChange]:
        """The latest ``limit`` changes, newest first."""
        t = TrafficChangeRow
        stmt = select(t).order_by(t.id.desc()).limit(limit)
        with self._sessions() as session:
            return [_to_change(row) for row in session.scalars(stmt)]

    def window_jobs(self, since: datetime, *, limit: int) -> Sequence[WindowJob]:
        """Celery and RQ jobs created since ``since``, newest first, at most ``limit``."""
        t = ReportJobRow
        stmt = (
            select(t.backend, t.status, t.created_at, t.queued_at, t.started_at)
            .where(t.created_at >= since, t.backend.in_(_BROKERED))
            .order_by(t.created_at.desc())
            .limit(limit)
        )
        with self._sessions() as session:
            return [
                WindowJob(Backend(b or Backend.INLINE), JobStatus(s), created, queued, started)
                for b, s, created, queued, started in session.execute(stmt)
            ]


def _change_row(
    now: datetime,
    actor: str,
    kind: ChangeKind,
    before: TrafficSplit | None,
    after: TrafficSplit,
    pinned: bool,
    reason: str,
) -> TrafficChangeRow:
    return TrafficChangeRow(
        at=now,
        actor=actor,
        kind=kind.value,
        before=before.as_dict() if before else None,
        after=after.as_dict(),
        pinned=pinned,
        reason=reason,
    )


def _to_state(row: TrafficDialRow) -> DialState:
    return DialState(
        split=TrafficSplit.from_dict(row.split),
        healthy=TrafficSplit.from_dict(row.healthy),
        pinned=row.pinned,
        version=row.version,
        changed_at=row.changed_at,
        changed_by=row.changed_by,
    )


def _to_change(row: TrafficChangeRow) -> DialChange:
    return DialChange(
        id=row.id,
        at=row.at,
        actor=row.actor,
        kind=ChangeKind(row.kind),
        before=TrafficSplit.from_dict(row.before) if row.before else None,
        after=TrafficSplit.from_dict(row.after),
        pinned=row.pinned,
        reason=row.reason,
    )
