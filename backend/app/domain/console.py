"""The console's view of the ledger: its job filter and its sign-in sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from app.domain.auth import Principal, Role
from app.domain.ledger import Cursor, JobPage
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus


@dataclass(frozen=True, slots=True)
class ConsoleFilter:
    """Every filter of the jobs page; ``owner`` is forced to the caller's for submitters."""

    status: JobStatus | None = None
    report_type: ReportType | None = None
    backend: Backend | None = None
    queue: Queue | None = None
    owner: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    rerun_of: UUID | None = None
    ids: frozenset[UUID] | None = None  # only these jobs (the page's live progress)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: only the SHA-256 of its cookie is stored, with its CSRF token."""

    token_hash: str
    owner: str
    role: Role
    key_id: str
    csrf: str
    created_at: datetime
    last_seen: datetime

    @property
    def principal(self) -> Principal:
        """The session's caller, as the :class:`Principal` of the requests it signs."""
        return Principal(owner=self.owner, role=self.role, key_id=self.key_id)


class ConsoleRepository(Protocol):
    """The console's reads of the ledger, and its sessions."""

    def jobs(self, where: ConsoleFilter, *, limit: int, after: Cursor | None) -> JobPage:
        """Newest first, keyset-paginated, by every filter of the jobs page."""
        ...

    def count_by_status(self, where: ConsoleFilter) -> Mapping[JobStatus, int]:
        """How many jobs per status match ``where`` (its status aside)."""
        ...

    def last_activity(self, backend: Backend) -> datetime | None:
        """The last time a job of ``backend`` changed (its newest ``updated_at``)."""
        ...

    def add_session(self, session: ConsoleSession) -> None:
        """Store a new sign-in session."""
        ...

    def find_session(self, token_hash: str) -> tuple[ConsoleSession, bool] | None:
        """The session of ``token_hash`` and whether its API key is active (one lookup)."""
        ...

    def touch_session(self, token_hash: str, *, now: datetime) -> None:
        """Set the session's ``last_seen`` to ``now``, so it does not count as idle."""
        ...

    def delete_session(self, token_hash: str) -> None:
        """Forget the session (sign-out); nothing happens if it is already gone."""
        ...

    def delete_idle_sessions(self, before: datetime) -> int:
        """Forget the sessions last seen before ``before``; returns how many."""
        ...
