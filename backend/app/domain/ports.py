"""Ports: what the services need from the outside world, as Protocols."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID

from app.domain.auth import ApiKey
from app.domain.console import ConsoleFilter, ConsoleSession
from app.domain.jobs import Artifact, JobError, NotifyStatus, ReportJob
from app.domain.progress import Progress
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus
from app.domain.traffic import ChangeKind, DialChange, DialState, TrafficSplit, WindowJob


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing returns: each field set narrows it, None leaves it open."""

    status: JobStatus | None = None
    report_type: ReportType | None = None
    backend: Backend | None = None
    owner: str | None = None
    schedule_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the last item seen, ordered by (created_at, id) descending."""

    created_at: datetime
    id: UUID


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of jobs, and the cursor of the next one (None on the last page)."""

    items: Sequence[ReportJob]
    next: Cursor | None


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many unfinished jobs are in ``status`` on ``queue`` and ``backend``."""

    queue: Queue
    backend: Backend | None
    status: JobStatus
    count: int


class JobRepository(Protocol):
    """The ledger. Every query lives behind it; each call is one committed transaction."""

    def ping(self) -> None:
        """Raise unless the ledger answers."""
        ...

    def add(self, job: ReportJob) -> None:
        """Insert a new job.

        Raises:
            IdempotencyKeyTaken: its owner already used its Idempotency-Key (carries that
                job).
            SlotTaken: its schedule's slot already has a job (carries that job).
        """
        ...

    def get(self, job_id: UUID) -> ReportJob | None:
        """The job, whoever owns it; None when no row has this id."""
        ...

    def find_idempotent(self, owner: str | None, idempotency_key: str) -> ReportJob | None:
        """The job ``owner`` created with this Idempotency-Key, if any."""
        ...

    def list_jobs(self, where: JobFilter, *, limit: int, after: Cursor | None) -> JobPage:
        """One page of the jobs matching ``where``, newest first, starting after ``after``."""
        ...

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
        """Move the job to ``target`` if its status is in ``expected``.

        ``expected`` defaults to every status ``target`` may legally follow; with
        ``stale_before``, a ``running`` row whose heartbeat (``updated_at``) is older also
        qualifies: its worker is gone. With ``expected_worker``, the row must also still
        name that worker: a worker leaving ``running`` passes its own id, so that once
        another worker has reclaimed the job, the former one's write is refused. Returns
        the updated job, or None when the row did not qualify (someone else got there
        first): the conditional update is what makes delivery idempotent.
        Entering ``running`` counts an attempt and records ``worker``; a terminal status
        records ``finished_at``.
        """
        ...

    def record_progress(
        self,
        job_id: UUID,
        *,
        progress: int,
        stage: str | None,
        now: datetime,
        worker: str | None = None,
    ) -> bool:
        """Store progress (the heartbeat) of a running job.

        Returns:
            False when the job is no longer running, or no longer run by ``worker`` when
            given (another worker reclaimed it).
        """
        ...

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        """Jobs not in a terminal status, oldest first."""
        ...

    def status_counts(self) -> Sequence[StatusCount]:
        """Count of unfinished jobs per (queue, backend, status)."""
        ...

    def record_document(self, job_id: UUID, document: Artifact, *, now: datetime) -> bool:
        """Attach the post-processed package to a completed job that has none yet."""
        ...

    def record_notification(
        self, job_id: UUID, *, status: NotifyStatus, now: datetime, error: str | None = None
    ) -> ReportJob | None:
        """Count one callback attempt, unless the callback is already sent or given up."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerCount:
    """How many live workers ``backend`` has on ``queue``."""

    backend: Backend
    queue: Queue
    workers: int


class JobDispatcher(Protocol):
    """Hands job ids to a backend. Implementations carry ids only, never payloads."""

    def choose(self, job: ReportJob) -> Backend:
        """The backend this job should go to. Raises Unavailable when there is none."""
        ...

    def dispatch(self, job: ReportJob) -> None:
        """Hand the (committed) job to ``job.backend``. Raises Unavailable on failure."""
        ...

    def cancel(self, job: ReportJob) -> None:
        """Best-effort backstop after the ledger says cancelled (revoke, stop command)."""
        ...

    def workers(self) -> Sequence[WorkerCount]:
        """Live workers per backend and queue, as far as each backend can tell."""
        ...


class ArtifactStore(Protocol):
    """Where finished reports live, spoken to in streams.

    Renderers write a local scratch file (``temp_path``); ``save`` hands it to the store,
    which publishes it whole or not at all. Nothing outside an adapter knows where the
    store keeps its bytes: readers get chunks (``read``), or a short-lived URL (``url_for``).
    """

    def temp_path(self, job_id: UUID, extension: str) -> Path:
        """A fresh local scratch file for a renderer (not a published place)."""
        ...

    def save(
        self,
        temp: Path,
        *,
        job_id: UUID,
        filename: str,
        content_type: str,
        attempt: int | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> Artifact:
        """Publish ``temp`` atomically under the job; records its size and sha256.

        With ``attempt``, the key is the attempt's own (``<job>/<attempt>/<filename>``): two
        attempts of a job never publish to the same place, so one never replaces or deletes
        the other's file. ``checkpoint`` is called while a long upload goes on; whatever it
        raises aborts the upload and leaves nothing behind. Raises ``StorageUnavailable``
        when the store does not answer.
        """
        ...

    def discard(self, temp: Path) -> None:
        """Remove a scratch file; nothing happens if it is already gone."""
        ...

    def delete(self, artifact: Artifact) -> None:
        """Remove the stored report (and the job's folders it leaves empty, on a disk)."""
        ...

    def read(self, artifact: Artifact, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; ``None``: the last) in chunks.

        The store is asked before the first chunk is returned, so a store that does not
        answer raises ``StorageUnavailable`` here, not in the middle of a response.
        """
        ...

    def url_for(self, artifact: Artifact, *, expires: int) -> str | None:
        """A URL that serves the report for ``expires`` seconds, or None if it has none."""
        ...

    def ping(self) -> None:
        """Raise unless the store answers (and its bucket or folder exists)."""
        ...


P_contra = TypeVar("P_contra", contravariant=True)


class Renderer(Protocol[P_contra]):
    """Writes one report type to a file, reporting progress at each page or chunk.

    Generic in its parameters: the registry pairs each report type with the renderer of
    that type's parameters (``PARAMS_MODELS``), so a renderer never checks what it got.
    """

    content_type: str
    extension: str

    def render(self, params: P_contra, target: Path, progress: Progress) -> None:
        """Write the report to ``target``, calling ``progress`` at each page or chunk.

        Raises:
            JobCancelled, JobInterrupted: from ``progress``; the renderer must stop.
        """
        ...


class CallbackSender(Protocol):
    """Delivers a finished job's callback: an HMAC-signed JSON POST."""

    def validate(self, url: str) -> None:
        """Raise InvalidInput unless callbacks may be sent to ``url``."""
        ...

    def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        """POST ``body``; raise CallbackFailed (retryable or not) unless it got a 2xx."""
        ...


class JobObserver(Protocol):
    """Receives job lifecycle events (logs today, metrics later)."""

    def job_event(self, event: str, job: ReportJob, **fields: Any) -> None:
        """Note that ``event`` (``enqueued``, ``started``, ...) happened to ``job``."""
        ...


# --------------------------------------------------------------------------- operations


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


class ApiKeyRepository(Protocol):
    """API keys: public records plus the SHA-256 of each secret."""

    def add(self, key: ApiKey, secret_hash: str) -> None:
        """Store a new key with the SHA-256 of its secret (never the secret itself)."""
        ...

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret hash, revoked or not."""
        ...

    def list_keys(self) -> Sequence[ApiKey]:
        """Every key, revoked or not."""
        ...

    def revoke(self, key_id: str, *, now: datetime) -> ApiKey | None:
        """Revoke an active key; ``None`` when no active key has this id."""
        ...


class TrafficRepository(Protocol):
    """The traffic dial (one row) and its audit trail; each call is one transaction."""

    def current(self) -> DialState | None:
        """The dial, or None before it was first seeded."""
        ...

    def seed(self, split: TrafficSplit, *, now: datetime) -> tuple[DialState, bool]:
        """Create the dial at ``split`` unless it exists (audited as a seed).

        Returns:
            The dial, and whether this call created it.
        """
        ...

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
        """Move the dial and record the change in one transaction.

        ``healthy`` also replaces the last healthy value. With ``expected_version``, only
        if the dial is still at that version (None when it moved meanwhile: another
        replica's guard or an operator got there first).
        """
        ...

    def mark_healthy(self, split: TrafficSplit, *, version: int) -> bool:
        """Remember ``split`` as the last healthy value if the dial is still at ``version``."""
        ...

    def history(self, *, limit: int) -> Sequence[DialChange]:
        """The latest changes, newest first."""
        ...

    def window_jobs(self, since: datetime, *, limit: int) -> Sequence[WindowJob]:
        """Celery and RQ jobs created since ``since``, newest first, at most ``limit``."""
        ...


class TrafficRecorder(Protocol):
    """Where the dial reports what it applied and what changed (metrics)."""

    def applied(self, split: TrafficSplit) -> None:
        """This process now routes by ``split``."""
        ...

    def changed(self, kind: ChangeKind, cause: str | None = None) -> None:
        """This process changed the dial (a rollback gives its ``cause``)."""
        ...


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
