"""Operations' ports: housekeeping's queries, the periodic runs' and health's recorder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol
from uuid import UUID

from app.domain.jobs import ReportJob
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus


@dataclass(frozen=True, slots=True)
class JobTiming:
    """What the daily figures need of one job."""

    report_type: ReportType
    backend: Backend | None
    status: JobStatus
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class DailyStats:
    """The figures of one day, and when they were computed."""

    day: date
    computed_at: datetime
    figures: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One dependency as a health check saw it."""

    name: str
    ok: bool
    latency_s: float
    detail: str | None = None


class HousekeepingRepository(Protocol):
    """The ledger's operations side: periodic runs, retention, recovery, daily figures."""

    def claim_run(self, task: str, slot: datetime, *, now: datetime) -> bool:
        """Record the run of ``task`` for ``slot``; False when it was already recorded."""
        ...

    def finish_run(
        self, task: str, slot: datetime, *, now: datetime, status: str, result: Mapping[str, Any]
    ) -> None:
        """Record how the run of ``task`` for ``slot`` ended: its status and result."""
        ...

    def expired(self, before: datetime, *, limit: int) -> Sequence[ReportJob]:
        """Finished jobs created before ``before``, oldest first."""
        ...

    def delete_finished(self, job_ids: Sequence[UUID]) -> int:
        """Delete those of ``job_ids`` that are finished; returns how many."""
        ...

    def stale_waiting(self, before: datetime, *, limit: int) -> Sequence[ReportJob]:
        """Celery/RQ jobs pending or queued since before ``before``, never re-dispatched."""
        ...

    def mark_redispatched(self, job_id: UUID, *, now: datetime) -> bool:
        """Mark the job re-dispatched; False when it already was (one re-dispatch a job)."""
        ...

    def running_since(self, before: datetime) -> Sequence[ReportJob]:
        """Celery/RQ jobs running since before ``before``."""
        ...

    def timings(self, start: datetime, end: datetime) -> Sequence[JobTiming]:
        """Jobs created in ``[start, end)``."""
        ...

    def save_daily_stats(self, day: date, figures: Mapping[str, Any], *, now: datetime) -> None:
        """Store (or replace) the figures of ``day``."""
        ...

    def daily_stats(self, day: date | None = None) -> DailyStats | None:
        """The figures of ``day``, or the latest stored when ``day`` is None."""
        ...


class OpsRecorder(Protocol):
    """Where housekeeping reports what it did (metrics)."""

    def periodic_run(self, task: str, outcome: str) -> None:
        """Count one run of ``task`` and its ``outcome``."""
        ...

    def component(self, name: str, *, ok: bool, latency_s: float) -> None:
        """Record whether the component ``name`` answered, and how fast."""
        ...
