"""The console's view of the ledger: its job filter and its sign-in sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.domain.auth import Principal, Role
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
