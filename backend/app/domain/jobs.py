"""Report jobs: types, statuses and their legal transitions, parameters, the job record."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.domain.errors import IllegalTransition, InvalidParams


def utcnow() -> datetime:
    """Timezone-aware current UTC time: the only clock format the platform stores."""
    return datetime.now(UTC)


class ReportType(StrEnum):
    """The kinds of report; each has its parameters model in :data:`PARAMS_MODELS`."""

    DUMMY = "dummy"
    PDF = "pdf"
    EXCEL = "excel"
    ANALYSIS = "analysis"


class Backend(StrEnum):
    """What carries a job to the code that runs it: a broker, or the API process itself."""

    INLINE = "inline"
    CELERY = "celery"
    RQ = "rq"
    SYNC = "sync"  # in the request's thread: the answer carries the finished job
    ASYNCIO = "asyncio"  # a task on the API's event loop

    @property
    def in_process(self) -> bool:
        """The API process runs the job itself: no broker, nothing survives a restart."""
        return self in (Backend.INLINE, Backend.SYNC, Backend.ASYNCIO)

    @property
    def in_request(self) -> bool:
        """Dispatch returns only once the job has run (the enqueue answer is its outcome)."""
        return self is Backend.SYNC


HOST = socket.gethostname()


def worker_name(backend: Backend, pid: int | None = None) -> str:
    """How a worker process signs its claims in the ledger: ``backend@host:pid``."""
    return f"{backend.value}@{HOST}:{os.getpid() if pid is None else pid}"


class Queue(StrEnum):
    """The seed's dedicated queues; :attr:`priority` follows its table (higher runs first)."""

    REPORTS = "reports"
    DOCUMENTS = "documents"
    NOTIFICATIONS = "notifications"
    CELERY = "celery"

    @property
    def priority(self) -> int:
        """The broker priority of this queue's messages, from the seed's table."""
        return _QUEUE_PRIORITY[self]

    @property
    def concurrency(self) -> int:
        """Worker processes a worker of this queue runs unless told otherwise (the table)."""
        return _QUEUE_CONCURRENCY[self]


_QUEUE_PRIORITY = {Queue.REPORTS: 5, Queue.DOCUMENTS: 7, Queue.NOTIFICATIONS: 3, Queue.CELERY: 6}
_QUEUE_CONCURRENCY = {Queue.REPORTS: 2, Queue.DOCUMENTS: 1, Queue.NOTIFICATIONS: 1, Queue.CELERY: 1}


class Step(StrEnum):
    """A job's pipeline, declared once: render, then package, then notify.

    Package (for a job with a callback) runs on ``documents``, notify (the callback, the
    emails) on ``notifications``.
    Each backend translates :attr:`ReportJob.pipeline` its own way (a Celery chain, RQ
    ``depends_on``, a loop in the inline pool); every step is idempotent, so a retry may
    start over from the render.
    """

    RENDER = "render"
    DOCUMENT = "document"
    NOTIFY = "notify"

    def queue(self, job: ReportJob) -> Queue:
        """The queue of this step's message: the job's own for the render."""
        return job.queue if self is Step.RENDER else _STEP_QUEUE[self]

    def message_id(self, job: ReportJob) -> str:
        """The broker-side id of this step's message: the job id, suffixed after the render."""
        return str(job.id) if self is Step.RENDER else f"{job.id}_{self.value}"


_STEP_QUEUE = {Step.DOCUMENT: Queue.DOCUMENTS, Step.NOTIFY: Queue.NOTIFICATIONS}


class JobStatus(StrEnum):
    """Where a job stands; :func:`check_transition` says which moves are legal."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Completed, failed or cancelled: no transition leaves this status."""
        return self in TERMINAL


# pending -> queued -> running -> completed | failed | cancelled, plus retrying.
# pending -> running: a fast worker may claim a job before the API has recorded "queued".
# running -> queued: recovery of a job whose worker was lost (the attempt stays counted).
_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.RETRYING,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.RETRYING: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses from which ``target`` may legally be reached."""
    return frozenset(s for s, targets in _TRANSITIONS.items() if target in targets)


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is legal."""
    if target not in _TRANSITIONS[current]:
        raise IllegalTransition(f"A job cannot go from {current} to {target}.")


@dataclass(frozen=True, slots=True)
class Entry:
    """What entering a status writes, besides ``status`` and ``updated_at`` (= now).

    The one definition of each transition's effects: the SQL repository turns it into
    the SET clause of its one UPDATE, the unit tests' fake applies it with :func:`enter`.
    Field names are :class:`ReportJob`'s.

    Attributes:
        values: Fields set to a constant.
        now: Fields set to the transition's time.
        now_if_unset: Fields set to the transition's time unless already set.
        counted: Integer fields incremented by one.
        worker: Whether the field ``worker`` takes the claiming worker's id.
    """

    values: dict[str, object] = field(default_factory=dict)
    now: tuple[str, ...] = ()
    now_if_unset: tuple[str, ...] = ()
    counted: tuple[str, ...] = ()
    worker: bool = False


_FINISHED = Entry(now=("finished_at",))

#: queued: handed to a backend (again). running: an attempt starts and is counted; a
#: worker may claim a job before "queued" was recorded, so queued_at is kept or set.
ENTRIES: dict[JobStatus, Entry] = {
    JobStatus.PENDING: Entry(),
    JobStatus.QUEUED: Entry(now=("queued_at",)),
    JobStatus.RUNNING: Entry(
        values={"progress": 0, "stage": "starting"},
        now=("started_at",),
        now_if_unset=("queued_at",),
        counted=("attempts",),
        worker=True,
    ),
    JobStatus.RETRYING: Entry(),
    JobStatus.COMPLETED: Entry(
        values={"progress": 100, "stage": "done", "error": None}, now=("finished_at",)
    ),
    JobStatus.FAILED: _FINISHED,
    JobStatus.CANCELLED: _FINISHED,
}


def enter(
    job: ReportJob,
    target: JobStatus,
    *,
    now: datetime,
    worker: str | None = None,
    error: JobError | None = None,
    artifact: Artifact | None = None,
) -> ReportJob:
    """``job`` after it entered ``target`` (legality is the caller's condition).

    ``error`` and ``artifact``, when given, are recorded too.
    """
    entry = ENTRIES[target]
    changes: dict[str, Any] = {"status": target, "updated_at": now, **entry.values}
    changes.update(dict.fromkeys(entry.now, now))
    changes.update({f: now for f in entry.now_if_unset if getattr(job, f) is None})
    changes.update({f: getattr(job, f) + 1 for f in entry.counted})
    if entry.worker:
        changes["worker"] = worker
    if error is not None:
        changes["error"] = error
    if artifact is not None:
        changes["artifact"] = artifact
    if JobStatus.RUNNING in (job.status, target):
        changes["attempt_log"] = log_attempts(job, target, now=now, worker=worker, error=error)
    return replace(job, **changes)


def log_attempts(
    job: ReportJob,
    target: JobStatus,
    *,
    now: datetime,
    worker: str | None,
    error: JobError | None,
) -> tuple[Attempt, ...]:
    """``job``'s attempts once it entered ``target``.

    Leaving ``running`` ends the current attempt (:data:`LOST` when another worker
    reclaims it); entering it starts the next.
    """
    log = job.attempt_log
    if job.status is JobStatus.RUNNING and log:
        outcome = LOST if target is JobStatus.RUNNING else target.value
        code = error.code if error is not None else None
        log = (*log[:-1], replace(log[-1], ended_at=now, outcome=outcome, error_code=code))
    if target is JobStatus.RUNNING:
        log = (*log, Attempt(job.attempts + 1, worker, now))
    return log


# --------------------------------------------------------------------------- parameters


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    processing_time: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Minimum duration in seconds, spread over the render's checkpoints.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the generated data.")


class DummyParams(_Params):
    """Parameters of a ``dummy`` report."""

    simulate_failures: int = Field(
        0,
        ge=0,
        le=5,
        description="Testing aid: the first N attempts fail with a retryable error.",
    )


class PdfParams(_Params):
    """Parameters of a ``pdf`` report."""

    pages: int = Field(50, ge=1, le=1000, description="Exact page count of the PDF.")


class ExcelParams(_Params):
    """Parameters of an ``excel`` report."""

    rows: int = Field(10_000, ge=1, le=1_000_000, description="Data rows across all sheets.")
    sheets: int = Field(3, ge=1, le=12, description="Number of data sheets.")


class AnalysisParams(_Params):
    """Parameters of an ``analysis`` report."""

    rows: int = Field(10_000, ge=100, le=1_000_000, description="Claims analysed.")


ReportParams = DummyParams | PdfParams | ExcelParams | AnalysisParams

PARAMS_MODELS: dict[ReportType, type[ReportParams]] = {
    ReportType.DUMMY: DummyParams,
    ReportType.PDF: PdfParams,
    ReportType.EXCEL: ExcelParams,
    ReportType.ANALYSIS: AnalysisParams,
}


def parse_params(report_type: ReportType, raw: dict[str, Any]) -> ReportParams:
    """Validate raw parameters for ``report_type``; defaults fill what is missing.

    Raises:
        InvalidParams: a value is out of bounds, of the wrong type, or not applicable.
    """
    try:
        return PARAMS_MODELS[report_type].model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: "
            + (
                f"not a parameter of {report_type} reports"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            for err in exc.errors()
        )
        raise InvalidParams(f"Invalid parameters for a {report_type} report: {problems}.") from exc


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True, slots=True)
class Artifact:
    """A stored file: its key in the artifact store, download name, type, size and SHA-256."""

    key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str

    def as_dict(self, *, key: bool = False) -> dict[str, Any]:
        """The file as the API, the callback and the package describe it.

        Args:
            key: Also give the store's key, first (the ledger's columns, in their order).

        Returns:
            ``filename``, ``content_type``, ``size_bytes`` and ``sha256``, in that order.
        """
        described = {
            "filename": self.filename,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }
        return {"key": self.key, **described} if key else described


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed: a stable error code and a message for people."""

    code: str
    message: str


#: An attempt's outcome when another worker reclaimed the job from under it.
LOST = "lost"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a job, in its timeline.

    Attributes:
        number: 1 for the first attempt (the job's ``attempts`` once it started).
        worker: The worker that claimed it.
        started_at: When it was claimed.
        ended_at: When the job left ``running`` (None while it runs).
        outcome: The status the job left ``running`` for, or :data:`LOST` when another
            worker reclaimed it.
        error_code: The error recorded with that outcome, if any.
    """

    number: int
    worker: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None
    error_code: str | None = None


class NotifyStatus(StrEnum):
    """Where the callback of a finished job stands."""

    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Notification:
    """The last callback attempt: its status, how many were made, and why it failed."""

    status: NotifyStatus
    attempts: int
    at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """The run of a schedule a job is: the ledger holds one job per (schedule, slot)."""

    schedule_id: UUID
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportJob:
    """A snapshot of one job's ledger row. Changes go through the repository."""

    id: UUID
    report_type: ReportType
    params: dict[str, Any]
    status: JobStatus
    queue: Queue
    priority: int
    created_at: datetime
    updated_at: datetime
    backend: Backend | None = None
    attempts: int = 0
    max_attempts: int = 4
    progress: int = 0
    stage: str | None = None
    error: JobError | None = None
    artifact: Artifact | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    worker: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    callback_url: str | None = None
    document: Artifact | None = None
    notification: Notification | None = None
    rerun_of: UUID | None = None  # the job this one runs again (the console's "Run again")
    attempt_log: tuple[Attempt, ...] = ()  # each attempt's run, oldest first
    recipients: tuple[str, ...] = ()  # emailed once the job ends (the notify step)
    attach_file: bool = True  # the email carries the report (under the size limit) or a link
    slot: Slot | None = None  # the schedule and slot this job runs, if a schedule made it

    QUEUE_FOR_TYPE: ClassVar[Queue] = Queue.REPORTS

    @classmethod
    def new(
        cls,
        *,
        report_type: ReportType,
        params: ReportParams,
        max_attempts: int,
        now: datetime,
        owner: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        rerun_of: UUID | None = None,
        recipients: tuple[str, ...] = (),
        attach_file: bool = True,
        slot: Slot | None = None,
    ) -> ReportJob:
        """A new ``pending`` job with a fresh id, on :attr:`QUEUE_FOR_TYPE` at its priority."""
        queue = cls.QUEUE_FOR_TYPE
        return cls(
            id=uuid4(),
            report_type=report_type,
            params=params.model_dump(mode="json"),
            status=JobStatus.PENDING,
            queue=queue,
            priority=queue.priority,
            max_attempts=max_attempts,
            owner=owner,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
            callback_url=callback_url,
            rerun_of=rerun_of,
            recipients=recipients,
            attach_file=attach_file,
            slot=slot,
        )

    def typed_params(self) -> ReportParams:
        """The stored parameters, validated into their report type's model."""
        return parse_params(self.report_type, self.params)

    def with_backend(self, backend: Backend) -> ReportJob:
        """This snapshot with ``backend`` set; the ledger row is not changed."""
        return replace(self, backend=backend)

    @property
    def pipeline(self) -> tuple[Step, ...]:
        """The steps its backend runs, in order.

        The render; with a callback, then the package and the notification; with
        recipients (and no callback), then the notification.
        """
        if self.callback_url is not None:
            return tuple(Step)
        return (Step.RENDER, Step.NOTIFY) if self.recipients else (Step.RENDER,)


#: The largest jitter added on top of a nominal delay, as a share of it.
RETRY_JITTER = 0.10


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a small positive jitter: the spec's ``60 * 2 ** retries``.

    After attempt ``n`` fails, the next one waits ``d + U(0, RETRY_JITTER * d)`` seconds,
    never more than ``cap``, where ``d = min(cap, base * 2**(n-1))``: with the defaults
    (base 60 s, cap 300 s) 60, 120, 240 seconds, each up to 10 % later.
    """

    base_seconds: float = 60.0
    cap_seconds: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def nominal(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (1-based) before jitter."""
        return min(self.cap_seconds, self.base_seconds * 2.0 ** max(attempt - 1, 0))

    def delay(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (1-based), jitter included."""
        return self.jittered(self.nominal(attempt))

    def after(self, attempt: int, limit: int) -> float | None:
        """The wait after a retryable failure of attempt ``attempt``, or None: final.

        ``attempt`` is the ledger's count; the failure of the ``limit``-th attempt is final.
        """
        return self.delay(attempt) if attempt < limit else None

    def jittered(self, seconds: float) -> float:
        """``seconds`` plus up to ``RETRY_JITTER`` of it, capped (spreads a burst of retries)."""
        extra = float(self.rng.uniform(0, RETRY_JITTER * seconds))
        return min(self.cap_seconds, seconds + extra)
