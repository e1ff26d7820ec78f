"""The SQL console repository: the jobs page's queries and the console's sessions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Select, Table, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKeyRow, ConsoleSessionRow, ReportJobRow
from app.db.paging import keyset_page
from app.domain.auth import Role
from app.domain.console import ConsoleFilter, ConsoleSession
from app.domain.ledger import Cursor, JobPage
from app.domain.queues import Backend
from app.domain.states import JobStatus

_J = cast(Table, ReportJobRow.__table__)
_S = cast(Table, ConsoleSessionRow.__table__)
_K = cast(Table, ApiKeyRow.__table__)


class SqlConsoleRepository:
    """:class:`~app.domain.console.ConsoleRepository` over SQLAlchemy."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._engine = engine
        self._sessions = sessions

    def jobs(self, where: ConsoleFilter, *, limit: int, after: Cursor | None) -> JobPage:
        """Newest first, keyset-paginated, by every filter of the jobs page."""
        stmt = _filtered(select(_J), where, with_status=True)
        return keyset_page(self._engine, stmt, limit=limit, after=after)

    def count_by_status(self, where: ConsoleFilter) -> Mapping[JobStatus, int]:
        """How many jobs per status match ``where`` (its status aside); every status, 0 included."""
        stmt = _filtered(select(_J.c.status, func.count()), where, with_status=False)
        with self._engine.connect() as conn:
            counted = {JobStatus(s): n for s, n in conn.execute(stmt.group_by(_J.c.status))}
        return {status: counted.get(status, 0) for status in JobStatus}

    def last_activity(self, backend: Backend) -> datetime | None:
        """The newest ``updated_at`` of ``backend``'s jobs; None when it has none."""
        stmt = select(func.max(_J.c.updated_at)).where(_J.c.backend == backend.value)
        with self._engine.connect() as conn:
            last: datetime | None = conn.execute(stmt).scalar()  # typed: aware UTC
        return last

    def add_session(self, session: ConsoleSession) -> None:
        """Store a new sign-in session."""
        with self._sessions.begin() as db:
            db.add(
                ConsoleSessionRow(
                    token_hash=session.token_hash,
                    owner=session.owner,
                    role=session.role.value,
                    key_id=session.key_id,
                    csrf=session.csrf,
                    created_at=session.created_at,
                    last_seen=session.last_seen,
                )
            )

    def find_session(self, token_hash: str) -> tuple[ConsoleSession, bool] | None:
        """The session of ``token_hash`` and whether its API key is active (one query)."""
        s, k = _S.c, _K.c
        active = (k.key_id.is_not(None) & k.revoked_at.is_(None)).label("key_active")
        stmt = (
            select(_S, active)
            .select_from(_S.outerjoin(_K, k.key_id == s.key_id))
            .where(s.token_hash == token_hash)
        )
        with self._engine.connect() as conn:
            row = conn.execute(stmt).one_or_none()
        if row is None:
            return None
        session = ConsoleSession(
            token_hash=row.token_hash,
            owner=row.owner,
            role=Role(row.role),
            key_id=row.key_id,
            csrf=row.csrf,
            created_at=row.created_at,
            last_seen=row.last_seen,
        )
        return session, bool(row.key_active)

    def touch_session(self, token_hash: str, *, now: datetime) -> None:
        """Set the session's ``last_seen`` to ``now``, so it does not count as idle."""
        t = ConsoleSessionRow
        with self._sessions.begin() as db:
            db.execute(update(t).where(t.token_hash == token_hash).values(last_seen=now))

    def delete_session(self, token_hash: str) -> None:
        """Forget the session (sign-out); nothing happens if it is already gone."""
        t = ConsoleSessionRow
        with self._sessions.begin() as db:
            db.execute(delete(t).where(t.token_hash == token_hash))

    def delete_idle_sessions(self, before: datetime) -> int:
        """Forget the sessions last seen before ``before``; returns how many."""
        t = ConsoleSessionRow
        with self._engine.begin() as conn:
            return conn.execute(delete(t).where(t.last_seen < before)).rowcount or 0


def _filtered(stmt: Select[Any], where: ConsoleFilter, *, with_status: bool) -> Select[Any]:
    for column, value in (
        (_J.c.status, where.status if with_status else None),
        (_J.c.report_type, where.report_type),
        (_J.c.backend, where.backend),
        (_J.c.queue, where.queue),
        (_J.c.owner, where.owner),
        (_J.c.rerun_of, where.rerun_of),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.ids is not None:
        stmt = stmt.where(_J.c.id.in_(where.ids))
    if where.since is not None:
        stmt = stmt.where(_J.c.created_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(_J.c.created_at < where.until)
    return stmt
