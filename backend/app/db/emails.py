"""The SQL side of email deliveries: the ``email_deliveries`` table, one statement a call.

A row per (job, recipient) is what makes an email go out once: the notify step creates the
rows (a second creation adds nothing), claims a recipient with a conditional update
before it talks to the mail server, and records the outcome fenced by the attempt it
claimed, so a duplicate or late step never sends a recipient's email twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Engine, Row, Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db.models import EmailDeliveryRow
from app.domain.mail import DeliveryStatus, EmailDelivery

_E = cast(Table, EmailDeliveryRow.__table__)
_CLAIMABLE = [DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]


class SqlEmailDeliveryRepository:
    """:class:`~app.domain.mail.EmailDeliveryRepository` in SQLAlchemy Core.

    For PostgreSQL or SQLite; each call is one statement in autocommit.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def create(self, job_id: UUID, recipients: Sequence[str], *, now: datetime) -> None:
        """A ``pending`` row for each recipient that has none yet (a second call adds nothing)."""
        if not recipients:
            return
        rows = [
            {
                "job_id": job_id,
                "recipient": recipient,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for recipient in recipients
        ]
        stmt = self._insert(_E).on_conflict_do_nothing(index_elements=["job_id", "recipient"])
        with self._engine.connect() as conn:
            conn.execute(stmt, rows)

    def claim(
        self, job_id: UUID, recipient: str, *, now: datetime, stale_before: datetime
    ) -> EmailDelivery | None:
        """Move the row to ``sending`` and count an attempt, if claimable; None otherwise.

        Claimable: ``pending``, ``retrying``, or ``sending`` since before ``stale_before``.
        """
        stmt = (
            update(_E)
            .where(
                _E.c.job_id == job_id,
                _E.c.recipient == recipient,
                or_(
                    _E.c.status.in_(_CLAIMABLE),
                    and_(
                        _E.c.status == DeliveryStatus.SENDING.value,
                        _E.c.updated_at < stale_before,
                    ),
                ),
            )
            .values(status=DeliveryStatus.SENDING.value, attempts=_E.c.attempts + 1, updated_at=now)
            .returning(*_E.c)
        )
        return self._returned(stmt)

    def finish(
        self,
        job_id: UUID,
        recipient: str,
        *,
        attempt: int,
        status: DeliveryStatus,
        reply: str | None,
        now: datetime,
    ) -> EmailDelivery | None:
        """Record claimed attempt ``attempt``'s outcome and reply (and ``sent_at`` once sent).

        None when the row is no longer that attempt's (another sender reclaimed it).
        """
        values: dict[str, Any] = {"status": status.value, "last_reply": reply, "updated_at": now}
        if status is DeliveryStatus.SENT:
            values["sent_at"] = now
        stmt = (
            update(_E)
            .where(
                _E.c.job_id == job_id,
                _E.c.recipient == recipient,
                _E.c.status == DeliveryStatus.SENDING.value,
                _E.c.attempts == attempt,
            )
            .values(values)
            .returning(*_E.c)
        )
        return self._returned(stmt)

    def for_job(self, job_id: UUID) -> Sequence[EmailDelivery]:
        """The job's deliveries, by recipient."""
        stmt = select(_E).where(_E.c.job_id == job_id).order_by(_E.c.recipient)
        with self._engine.connect() as conn:
            return [to_delivery(row) for row in conn.execute(stmt)]

    def _returned(self, stmt: Any) -> EmailDelivery | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return to_delivery(row) if row is not None else None


def to_delivery(row: Row[Any]) -> EmailDelivery:
    """The :class:`EmailDelivery` of an ``email_deliveries`` row."""
    return EmailDelivery(
        job_id=row.job_id,
        recipient=row.recipient,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_reply=row.last_reply,
        sent_at=row.sent_at,
    )
