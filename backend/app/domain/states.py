"""A job's statuses, their legal moves, what each move writes, and the attempt timeline."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from app.domain.errors import IllegalTransition

if TYPE_CHECKING:
    from app.domain.jobs import Artifact, JobError, ReportJob


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
