"""In-memory adapters implementing the ports, for service unit tests."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import UUID

from app.domain.errors import BackendUnavailable, IdempotencyKeyTaken, SlotTaken
from app.domain.jobs import Artifact, JobError, ReportJob
from app.domain.ledger import Cursor, JobFilter, JobPage, StatusCount
from app.domain.mail import DeliveryStatus, EmailDelivery
from app.domain.params import ReportParams
from app.domain.ports import Renderer, WorkerCount
from app.domain.progress import Progress
from app.domain.queues import Backend, Queue, ReportType
from app.domain.retry import RetryPolicy
from app.domain.states import TERMINAL, JobStatus, enter, sources_of
from app.domain.traffic import ChangeKind, DialChange, DialState, TrafficSplit, WindowJob
from app.services.deps import Deps, JobPolicy
from app.storage.local import LocalArtifactStore


class MemoryRepository:
    def __init__(self) -> None:
        self.jobs: dict[UUID, ReportJob] = {}
        self.progress_writes: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()

    def ping(self) -> None:
        return None

    def add(self, job: ReportJob) -> None:
        key = job.idempotency_key
        earlier = self.find_idempotent(job.owner, key) if key is not None else None
        if earlier is not None:
            raise IdempotencyKeyTaken(earlier)
        ran = next((j for j in self.jobs.values() if job.slot and j.slot == job.slot), None)
        if ran is not None:
            raise SlotTaken(ran)
        self.jobs[job.id] = job

    def get(self, job_id: UUID) -> ReportJob | None:
        return self.jobs.get(job_id)

    def find_idempotent(self, owner: str | None, idempotency_key: str) -> ReportJob | None:
        return next(
            (
                j
                for j in self.jobs.values()
                if j.owner == owner and j.idempotency_key == idempotency_key
            ),
            None,
        )

    def list_jobs(self, where: JobFilter, *, limit: int, after: Cursor | None) -> JobPage:
        items = sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        items = [
            j
            for j in items
            if (where.status is None or j.status == where.status)
            and (where.report_type is None or j.report_type == where.report_type)
            and (where.backend is None or j.backend == where.backend)
            and (where.owner is None or j.owner == where.owner)
            and (where.schedule_id is None or (j.slot and j.slot.schedule_id == where.schedule_id))
            and (after is None or (j.created_at, j.id) < (after.created_at, after.id))
        ]
        page = items[:limit]
        more = len(items) > limit
        return JobPage(page, Cursor(page[-1].created_at, page[-1].id) if more else None)

    def transition(
        self,
        job_id: UUID,
        target: JobStatus,
        *,
        now: datetime,
        expected: frozenset[JobStatus] | None = None,
        worker: str | None = None,
        error: JobError | None = None,
        artifact: Artifact | None = None,
        stale_before: datetime | None = None,
        expected_worker: str | None = None,
    ) -> ReportJob | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            lost = (
                stale_before is not None
                and job.status is JobStatus.RUNNING
                and job.updated_at < stale_before
            )
            if (
                job.status not in (sources_of(target) if expected is None else expected)
                and not lost
            ):
                return None
            if expected_worker is not None and job.worker != expected_worker:
                return None
            job = enter(job, target, now=now, worker=worker, error=error, artifact=artifact)
            self.jobs[job_id] = job
            return job

    def record_progress(
        self,
        job_id: UUID,
        *,
        progress: int,
        stage: str | None,
        now: datetime,
        worker: str | None = None,
    ) -> bool:
        job = self.jobs[job_id]
        if job.status is not JobStatus.RUNNING or worker not in (None, job.worker):
            return False
        self.progress_writes.append((progress, stage))
        self.jobs[job_id] = replace(job, progress=progress, stage=stage, updated_at=now)
        return True

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        return [
            j
            for j in sorted(self.jobs.values(), key=lambda j: j.created_at)
            if j.status not in TERMINAL and (backend is None or j.backend == backend)
        ]

    def status_counts(self) -> Sequence[StatusCount]:
        counts: dict[tuple[Queue, Backend | None, JobStatus], int] = {}
        for j in self.unfinished():
            key = (j.queue, j.backend, j.status)
            counts[key] = counts.get(key, 0) + 1
        return [StatusCount(q, b, s, n) for (q, b, s), n in counts.items()]


class RecordingDispatcher:
    """Records dispatches; ``fail`` makes the next dispatch raise."""

    def __init__(self, backend: Backend = Backend.INLINE, *, available: bool = True) -> None:
        self.backend = backend
        self.is_available = available
        self.fail = False
        self.dispatched: list[UUID] = []
        self.cancelled: list[UUID] = []

    def choose(self, job: ReportJob) -> Backend:
        if not self.is_available:
            raise BackendUnavailable("no backend in this test")
        return self.backend

    def dispatch(self, job: ReportJob) -> None:
        if self.fail:
            raise BackendUnavailable("broker went away")
        self.dispatched.append(job.id)

    def cancel(self, job: ReportJob) -> None:
        self.cancelled.append(job.id)

    def workers(self) -> Sequence[WorkerCount]:
        return [WorkerCount(self.backend, Queue.REPORTS, 2)]


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple[str, UUID]] = []

    def job_event(self, event: str, job: ReportJob, **fields: object) -> None:
        self.events.append((event, job.id))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


class ScriptedRenderer:
    """Writes ``steps`` lines, checkpointing after each; can raise on a given attempt."""

    content_type = "text/plain"
    extension = "txt"

    def __init__(
        self, steps: int = 4, fail_on: set[int] | None = None, error: Exception | None = None
    ) -> None:
        self.steps = steps
        self.fail_on = fail_on or set()
        self.error = error or RuntimeError("disk full")
        self.calls = 0

    def render(self, params: ReportParams, target: Path, progress: Progress) -> None:
        self.calls += 1
        if progress.attempt in self.fail_on:
            raise self.error
        with target.open("w") as fh:
            for i in range(self.steps):
                fh.write(f"line {i}\n")
                progress.advance((i + 1) / self.steps, f"step {i + 1}")


def memory_deps(
    artifacts: Path,
    *,
    repo: MemoryRepository | None = None,
    renderer: Renderer | None = None,
    dispatcher: RecordingDispatcher | None = None,
    worker_id: str = "test-worker",
    **policy: Any,
) -> Deps:
    """Services' dependencies on in-memory adapters and a real local artifact store.

    ``policy`` overrides :class:`JobPolicy` fields (3 attempts, a seeded 1–10 s backoff).
    """
    return Deps(
        repo=repo or MemoryRepository(),
        dispatcher=dispatcher or RecordingDispatcher(),
        store=LocalArtifactStore(artifacts),
        renderers=dict.fromkeys(ReportType, renderer or ScriptedRenderer()),
        observer=RecordingObserver(),
        policy=JobPolicy(
            **{"max_attempts": 3, "retry": RetryPolicy(1, 10, random.Random(1)), **policy}
        ),
        worker_id=worker_id,
    )


class MemoryTrafficRepository:
    """:class:`~app.domain.traffic.TrafficRepository` in memory; ``jobs`` feed the window."""

    def __init__(self) -> None:
        self.dial: DialState | None = None
        self.changes: list[DialChange] = []
        self.jobs: list[WindowJob] = []

    def current(self) -> DialState | None:
        return self.dial

    def seed(self, split: TrafficSplit, *, now: datetime) -> tuple[DialState, bool]:
        if self.dial is not None:
            return self.dial, False
        self.dial = DialState(split, split, False, 1, now, "environment")
        self._record(now, "environment", ChangeKind.SEED, None, split, False, "first value")
        return self.dial, True

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
        dial = self.dial
        if dial is None or expected_version not in (None, dial.version):
            return None
        self.dial = DialState(split, healthy or dial.healthy, pinned, dial.version + 1, now, actor)
        change = self._record(now, actor, kind, dial.split, split, pinned, reason)
        return self.dial, change

    def mark_healthy(self, split: TrafficSplit, *, version: int) -> bool:
        if self.dial is None or self.dial.version != version:
            return False
        self.dial = replace(self.dial, healthy=split)
        return True

    def history(self, *, limit: int) -> Sequence[DialChange]:
        return list(reversed(self.changes))[:limit]

    def window_jobs(self, since: datetime, *, limit: int) -> Sequence[WindowJob]:
        recent = [j for j in self.jobs if j.created_at >= since]
        return sorted(recent, key=lambda j: j.created_at, reverse=True)[:limit]

    def _record(
        self,
        now: datetime,
        actor: str,
        kind: ChangeKind,
        before: TrafficSplit | None,
        after: TrafficSplit,
        pinned: bool,
        reason: str,
    ) -> DialChange:
        change = DialChange(len(self.changes) + 1, now, actor, kind, before, after, pinned, reason)
        self.changes.append(change)
        return change


class RecordingTrafficRecorder:
    """:class:`~app.domain.traffic.TrafficRecorder` keeping what it was told."""

    def __init__(self) -> None:
        self.applied_splits: list[TrafficSplit] = []
        self.changes: list[tuple[ChangeKind, str | None]] = []

    def applied(self, split: TrafficSplit) -> None:
        self.applied_splits.append(split)

    def changed(self, kind: ChangeKind, cause: str | None = None) -> None:
        self.changes.append((kind, cause))


class MemoryEmailDeliveries:
    """The ledger's ``email_deliveries`` in memory, with the SQL repository's conditions."""

    def __init__(self) -> None:
        self.rows: dict[tuple[UUID, str], EmailDelivery] = {}

    def create(self, job_id: UUID, recipients: Sequence[str], *, now: datetime) -> None:
        for r in recipients:
            self.rows.setdefault(
                (job_id, r), EmailDelivery(job_id, r, DeliveryStatus.PENDING, 0, now, now)
            )

    def claim(
        self, job_id: UUID, recipient: str, *, now: datetime, stale_before: datetime
    ) -> EmailDelivery | None:
        row = self.rows.get((job_id, recipient))
        stale = row is not None and row.status is DeliveryStatus.SENDING
        if row is None or not (
            row.status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
            or (stale and row.updated_at < stale_before)
        ):
            return None
        claimed = replace(
            row, status=DeliveryStatus.SENDING, attempts=row.attempts + 1, updated_at=now
        )
        self.rows[(job_id, recipient)] = claimed
        return claimed

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
        row = self.rows.get((job_id, recipient))
        if row is None or row.status is not DeliveryStatus.SENDING or row.attempts != attempt:
            return None
        sent_at = now if status is DeliveryStatus.SENT else row.sent_at
        done = replace(row, status=status, last_reply=reply, updated_at=now, sent_at=sent_at)
        self.rows[(job_id, recipient)] = done
        return done

    def for_job(self, job_id: UUID) -> Sequence[EmailDelivery]:
        return sorted(
            (r for r in self.rows.values() if r.job_id == job_id), key=lambda r: r.recipient
        )


class ScriptedMailer:
    """Keeps each message; raises the errors scripted for a recipient, one per send."""

    def __init__(self) -> None:
        self.errors: dict[str, list[Exception]] = {}
        self.sent: list[tuple[str, EmailMessage]] = []

    def fail(self, recipient: str, *errors: Exception) -> ScriptedMailer:
        self.errors.setdefault(recipient, []).extend(errors)
        return self

    def send(self, message: EmailMessage, *, recipient: str) -> str:
        pending = self.errors.get(recipient)
        if pending:
            raise pending.pop(0)
        self.sent.append((recipient, message))
        return f"250 OK queued as {len(self.sent)}"

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for r, m in self.sent if r == recipient]
