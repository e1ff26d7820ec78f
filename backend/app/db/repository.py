"""The SQL job repository: every query of the ledger lives here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Engine,
    Select,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import UpdateBase

from app.db.driver import DriverRunner, DriverStatement
from app.db.job_rows import JOBS, artifact_columns, to_job, to_values
from app.db.paging import keyset_page
from app.db.transitions import (
    NOW,
    Shape,
    progress_statement,
    transition_statement,
)
from app.domain.errors import IdempotencyKeyTaken, SlotTaken
from app.domain.jobs import Artifact, JobError, NotifyStatus, ReportJob
from app.domain.ledger import Cursor, JobFilter, JobPage, StatusCount
from app.domain.queues import Backend, Queue
from app.domain.states import TERMINAL, JobStatus, sources_of


class SqlJobRepository:
    """:class:`~app.domain.ledger.JobRepository` in SQLAlchemy Core; one transaction per call.

    The hot path (insert, claim, progress, finish) is one statement per call, built once
    per shape and reused, so SQLAlchemy compiles it once and only binds values after: no
    ORM unit of work, no per-call statement building. On PostgreSQL it then runs on the
    driver's own cursor (:mod:`app.db.driver`), past SQLAlchemy's per-call execution
    machinery. ``transition`` writes the columns the domain's
    :data:`~app.domain.states.ENTRIES` say the target status sets.

    A job costs three commits, each one statement and one round trip: the insert, already
    ``queued``, before the publish (the row exists before its message); the claim (the
    attempt becomes visible: cancellation, progress and fencing act on it, a duplicate
    delivery is refused); the outcome. Heartbeats add one a ``PROGRESS_INTERVAL`` while a
    render lasts. On PostgreSQL the claim and the heartbeats commit without waiting for
    the WAL flush (see :data:`~app.db.transitions.NO_FLUSH_WAIT`); the insert and the
    outcome wait for it.
    """

    def __init__(self, engine: Engine) -> None:
        # Every call is one statement: in autocommit it is its own transaction, one round
        # trip, where BEGIN … COMMIT would take three.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        # On PostgreSQL the hot path runs on the driver's cursor (app.db.driver).
        self._driver = DriverRunner(engine) if self._postgres else None
        self._on_driver: dict[UpdateBase, DriverStatement] = {}

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self._engine.connect() as conn:
            conn.execute(_PING)

    def add(self, job: ReportJob) -> None:
        """Insert a new job.

        Raises:
            IdempotencyKeyTaken: its owner already used its Idempotency-Key (carries that
                job).
            SlotTaken: its schedule's slot already has a job (carries that job).
            IntegrityError: the insert broke another constraint.
        """
        try:
            values = to_values(job)
            if self._driver is not None:
                self._driver.count(self._hot(_INSERT, columns=list(values)), values)
            else:
                with self._engine.connect() as conn:
                    conn.execute(_INSERT, values)
        except IntegrityError as exc:
            key = job.idempotency_key
            earlier = self.find_idempotent(job.owner, key) if key is not None else None
            if earlier is not None:
                raise IdempotencyKeyTaken(earlier) from exc
            if job.slot is not None:
                slot = job.slot
                ran = self._one(_BY_SLOT, {"schedule_id": slot.schedule_id, "at": slot.at})
                if ran is not None:
                    raise SlotTaken(ran) from exc
            raise

    def warm_up(self) -> None:
        """Have SQLAlchemy compile a worker's statements: run each once, on no row.

        A process forked from this one (an RQ work horse) inherits the cache and pays only
        its own connection, not ~20 ms of compiling per job.
        """
        nobody, now, me = UUID(int=0), datetime.now(UTC), "-"
        running = frozenset({JobStatus.RUNNING})
        self.get(nobody)
        self.transition(nobody, JobStatus.RUNNING, now=now, worker=me)
        for target, error, artifact in (
            (JobStatus.COMPLETED, None, _NO_ARTIFACT),
            (JobStatus.RETRYING, _NO_ERROR, None),
            (JobStatus.FAILED, _NO_ERROR, None),
            (JobStatus.QUEUED, None, None),
        ):
            self.transition(
                nobody,
                target,
                now=now,
                expected=running,
                expected_worker=me,
                error=error,
                artifact=artifact,
            )
        self.record_progress(nobody, progress=0, stage=None, now=now, worker=me)

    def find_idempotent(self, owner: str | None, idempotency_key: str) -> ReportJob | None:
        """The job ``owner`` created with this Idempotency-Key, if any."""
        return self._one(_BY_IDEMPOTENCY_KEY, {"owner": owner, "key": idempotency_key})

    def get(self, job_id: UUID) -> ReportJob | None:
        """The job, whoever owns it; None when no row has this id."""
        return self._one(_BY_ID, {"job_id": job_id})

    def list_jobs(self, where: JobFilter, *, limit: int, after: Cursor | None) -> JobPage:
        """One page of the jobs matching ``where``, newest first, starting after ``after``."""
        stmt = select(JOBS)
        for column, value in (
            (JOBS.c.status, where.status),
            (JOBS.c.report_type, where.report_type),
            (JOBS.c.backend, where.backend),
            (JOBS.c.owner, where.owner),
            (JOBS.c.schedule_id, where.schedule_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return keyset_page(self._engine, stmt, limit=limit, after=after)

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
        """Move the job to ``target`` in one conditional UPDATE; None when it did not qualify."""
        shape = Shape(
            target,
            error is not None,
            artifact is not None,
            stale_before is not None,
            expected_worker is not None,
            self._postgres,
        )
        stmt = transition_statement(shape)
        sources = sources_of(target) if expected is None else expected
        params: dict[str, Any] = {
            "job_id": job_id,
            "now": now,
            "sources": [s.value for s in sources],
            "new_worker": worker,
            "stale_before": stale_before,
            "expected_worker": expected_worker,
        }
        if error is not None:
            params.update(new_error_code=error.code, new_error_message=error.message)
        if artifact is not None:
            params.update({f"new_{c}": v for c, v in artifact_columns(artifact).items()})
        if self._driver is not None:
            row = self._driver.first(self._hot(stmt, rows=True), params)
        else:
            with self._engine.connect() as conn:
                row = conn.execute(stmt, params).first()
        return to_job(row) if row is not None else None

    def record_progress(
        self,
        job_id: UUID,
        *,
        progress: int,
        stage: str | None,
        now: datetime,
        worker: str | None = None,
    ) -> bool:
        """Store progress (clamped to 0..100) and stage; False when no longer running.

        With ``worker``, also False when the job is no longer that worker's.
        """
        params = {
            "job_id": job_id,
            "new_progress": max(0, min(progress, 100)),
            "new_stage": stage,
            "now": now,
            "expected_worker": worker,
        }
        stmt = progress_statement(fenced=worker is not None, postgres=self._postgres)
        if self._driver is not None:
            return bool(self._driver.count(self._hot(stmt), params))
        with self._engine.connect() as conn:
            return bool(conn.execute(stmt, params).rowcount)

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        """Jobs not in a terminal status (only ``backend``'s when given), oldest first."""
        stmt = select(JOBS).where(JOBS.c.status.in_(_UNFINISHED)).order_by(JOBS.c.created_at)
        if backend is not None:
            stmt = stmt.where(JOBS.c.backend == backend.value)
        with self._engine.connect() as conn:
            return [to_job(r) for r in conn.execute(stmt)]

    def status_counts(self) -> Sequence[StatusCount]:
        """Count of unfinished jobs per (queue, backend, status)."""
        stmt = (
            select(JOBS.c.queue, JOBS.c.backend, JOBS.c.status, func.count())
            .where(JOBS.c.status.in_(_UNFINISHED))
            .group_by(JOBS.c.queue, JOBS.c.backend, JOBS.c.status)
        )
        with self._engine.connect() as conn:
            return [
                StatusCount(
                    queue=Queue(queue),
                    backend=Backend(backend) if backend else None,
                    status=JobStatus(status),
                    count=count,
                )
                for queue, backend, status, count in conn.execute(stmt)
            ]

    def record_document(self, job_id: UUID, document: Artifact, *, now: datetime) -> bool:
        """Attach the package to a completed job that has none yet; False otherwise."""
        params = {
            "job_id": job_id,
            "now": now,
            "new_document_key": document.key,
            "new_document_size": document.size_bytes,
            "new_document_sha256": document.sha256,
        }
        with self._engine.connect() as conn:
            return bool(conn.execute(_DOCUMENT, params).rowcount)

    def record_notification(
        self, job_id: UUID, *, status: NotifyStatus, now: datetime, error: str | None = None
    ) -> ReportJob | None:
        """Count one callback attempt with its status.

        Returns:
            The updated job; None when its callback was already sent or given up (or no
            row has this id).
        """
        params = {
            "job_id": job_id,
            "now": now,
            "new_notify_status": status.value,
            "new_notify_error": error,
        }
        with self._engine.connect() as conn:
            row = conn.execute(_NOTIFICATION, params).first()
        return to_job(row) if row is not None else None

    def _hot(
        self, stmt: UpdateBase, *, rows: bool = False, columns: list[str] | None = None
    ) -> DriverStatement:
        """``stmt`` (built once and kept) compiled for the driver, once.

        ``rows``: it returns the whole row; ``columns``: those an INSERT names.
        """
        compiled = self._on_driver.get(stmt)
        if compiled is None:
            returning = list(JOBS.c) if rows else []
            compiled = DriverStatement(stmt, self._engine, returning, columns)
            self._on_driver[stmt] = compiled
        return compiled

    def _one(self, stmt: Select[Any], params: dict[str, Any]) -> ReportJob | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt, params).first()
        return to_job(row) if row is not None else None


# --------------------------------------------------------------------------- statements

_UNFINISHED = [s.value for s in JobStatus if s not in TERMINAL]
_PING = select(literal(1))
_INSERT = insert(JOBS)
_BY_ID = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
_BY_SLOT = select(JOBS).where(
    JOBS.c.schedule_id == bindparam("schedule_id"),
    JOBS.c.scheduled_for == bindparam("at", type_=JOBS.c.scheduled_for.type),
)
_BY_IDEMPOTENCY_KEY = select(JOBS).where(
    JOBS.c.owner == bindparam("owner"), JOBS.c.idempotency_key == bindparam("key")
)

_DOCUMENT = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("job_id"),
        JOBS.c.status == JobStatus.COMPLETED.value,
        JOBS.c.document_key.is_(None),
    )
    .values(
        document_key=bindparam("new_document_key"),
        document_size=bindparam("new_document_size"),
        document_sha256=bindparam("new_document_sha256"),
        updated_at=NOW,
    )
)
_NOTIFICATION = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("job_id"),
        or_(JOBS.c.notify_status.is_(None), JOBS.c.notify_status == NotifyStatus.RETRYING.value),
    )
    .values(
        notify_status=bindparam("new_notify_status"),
        notify_attempts=JOBS.c.notify_attempts + 1,
        notify_error=bindparam("new_notify_error"),
        notified_at=NOW,
        updated_at=NOW,
    )
    .returning(*JOBS.c)
)


_NO_ARTIFACT = Artifact("-", "-", "-", 0, "-")
_NO_ERROR = JobError("-", "-")
