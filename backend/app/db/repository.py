"""The SQL job repository: every query of the ledger lives here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast
from uuid import UUID

from sqlalchemy import (
    Engine,
    Row,
    Select,
    String,
    Table,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import ReportJobRow
from app.domain.errors import IdempotencyKeyTaken, SlotTaken
from app.domain.jobs import (
    ENTRIES,
    LOST,
    TERMINAL,
    Artifact,
    Attempt,
    Backend,
    JobError,
    JobStatus,
    Notification,
    NotifyStatus,
    Queue,
    ReportJob,
    ReportType,
    Slot,
    sources_of,
)
from app.domain.ports import Cursor, JobFilter, JobPage, StatusCount


class SqlJobRepository:
    """:class:`~app.domain.ports.JobRepository` in SQLAlchemy Core; one transaction per call.

    The hot path (insert, claim, progress, finish) is one statement per call, built once
    per shape and reused, so SQLAlchemy compiles it once and only binds values after: no
    ORM unit of work, no per-call statement building. ``transition`` writes the columns
    the domain's :data:`~app.domain.jobs.ENTRIES` say the target status sets.

    A job costs three commits, each one statement and one round trip: the insert, already
    ``queued``, before the publish (the row exists before its message); the claim (the
    attempt becomes visible: cancellation, progress and fencing act on it, a duplicate
    delivery is refused); the outcome. Heartbeats add one a ``PROGRESS_INTERVAL`` while a
    render lasts. On PostgreSQL the claim and the heartbeats commit without waiting for
    the WAL flush (see :data:`_NO_FLUSH_WAIT`); the insert and the outcome wait for it.
    """

    def __init__(self, engine: Engine) -> None:
        # Every call is one statement: in autocommit it is its own transaction, one round
        # trip, where BEGIN … COMMIT would take three.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"

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
            with self._engine.connect() as conn:
                conn.execute(_INSERT, _to_values(job))
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
        stmt = select(_T)
        for column, value in (
            (_T.c.status, where.status),
            (_T.c.report_type, where.report_type),
            (_T.c.backend, where.backend),
            (_T.c.owner, where.owner),
            (_T.c.schedule_id, where.schedule_id),
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
        shape = _Shape(
            target,
            error is not None,
            artifact is not None,
            stale_before is not None,
            expected_worker is not None,
            self._postgres,
        )
        stmt = _transition_statement(shape)
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
            params.update({f"new_{c}": v for c, v in _artifact_columns(artifact).items()})
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
        stmt = _progress_statement(fenced=worker is not None, postgres=self._postgres)
        with self._engine.connect() as conn:
            return bool(conn.execute(stmt, params).rowcount)

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        """Jobs not in a terminal status (only ``backend``'s when given), oldest first."""
        stmt = select(_T).where(_T.c.status.in_(_UNFINISHED)).order_by(_T.c.created_at)
        if backend is not None:
            stmt = stmt.where(_T.c.backend == backend.value)
        with self._engine.connect() as conn:
            return [to_job(r) for r in conn.execute(stmt)]

    def status_counts(self) -> Sequence[StatusCount]:
        """Count of unfinished jobs per (queue, backend, status)."""
        stmt = (
            select(_T.c.queue, _T.c.backend, _T.c.status, func.count())
            .where(_T.c.status.in_(_UNFINISHED))
            .group_by(_T.c.queue, _T.c.backend, _T.c.status)
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

    def _one(self, stmt: Select[Any], params: dict[str, Any]) -> ReportJob | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt, params).first()
        return to_job(row) if row is not None else None


def keyset_page(engine: Engine, jobs: Select[Any], *, limit: int, after: Cursor | None) -> JobPage:
    """One page of ``jobs`` (a filtered ``select`` of the ledger's rows), newest first."""
    rows, more = keyset_rows(engine, jobs, _T, limit=limit, after=after)
    items = [to_job(r) for r in rows]
    return JobPage(items, Cursor(items[-1].created_at, items[-1].id) if more and items else None)


def keyset_rows(
    engine: Engine, stmt: Select[Any], table: Table, *, limit: int, after: Cursor | None
) -> tuple[list[Row[Any]], bool]:
    """One page of ``stmt``'s rows of ``table``, newest first, and whether more follow.

    Keyset paging on (created_at, id): a page costs the same wherever it is, and a row
    added meanwhile neither shifts nor repeats the others.
    """
    stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(
            or_(
                table.c.created_at < after.created_at,
                and_(table.c.created_at == after.created_at, table.c.id < after.id),
            )
        )
    with engine.connect() as conn:
        rows = list(conn.execute(stmt).all())
    return rows[:limit], len(rows) > limit


# --------------------------------------------------------------------------- statements

_T = cast(Table, ReportJobRow.__table__)
#: The time of a write, typed so that the ledger's UTC rule applies to it.
_NOW = bindparam("now", type_=_T.c.updated_at.type)
_UNFINISHED = [s.value for s in JobStatus if s not in TERMINAL]
_PING = select(literal(1))
_INSERT = insert(_T)
_BY_ID = select(_T).where(_T.c.id == bindparam("job_id"))
_BY_SLOT = select(_T).where(
    _T.c.schedule_id == bindparam("schedule_id"),
    _T.c.scheduled_for == bindparam("at", type_=_T.c.scheduled_for.type),
)
_BY_IDEMPOTENCY_KEY = select(_T).where(
    _T.c.owner == bindparam("owner"), _T.c.idempotency_key == bindparam("key")
)
#: Part of a statement's WHERE on PostgreSQL: the one-statement transaction it runs in
#: commits without waiting for the WAL flush (``SET LOCAL synchronous_commit = off``, in
#: the same round trip). The write is visible to every session at once, so the
#: conditional claim, cancellation and fencing are unchanged; only a crash of PostgreSQL
#: itself can lose it, within ~3 × ``wal_writer_delay``. Used where such a loss costs no
#: job: a heartbeat (the next one, or the outcome, replaces it) and the claim (lost, the
#: row is back where it was; the worker running it is fenced out at its next write and
#: the job runs again, at least once as after any crash). The insert and the outcome
#: wait for the flush: a client may have seen them.
_NO_FLUSH_WAIT = text("set_config('synchronous_commit', 'off', true) = 'off'")


@functools.cache
def _progress_statement(*, fenced: bool, postgres: bool) -> Update:
    stmt = (
        update(_T)
        .where(_T.c.id == bindparam("job_id"), _T.c.status == JobStatus.RUNNING.value)
        .values(progress=bindparam("new_progress"), stage=bindparam("new_stage"), updated_at=_NOW)
    )
    if fenced:
        stmt = stmt.where(_T.c.worker == bindparam("expected_worker"))
    return stmt.where(_NO_FLUSH_WAIT) if postgres else stmt


_DOCUMENT = (
    update(_T)
    .where(
        _T.c.id == bindparam("job_id"),
        _T.c.status == JobStatus.COMPLETED.value,
        _T.c.document_key.is_(None),
    )
    .values(
        document_key=bindparam("new_document_key"),
        document_size=bindparam("new_document_size"),
        document_sha256=bindparam("new_document_sha256"),
        updated_at=_NOW,
    )
)
_NOTIFICATION = (
    update(_T)
    .where(
        _T.c.id == bindparam("job_id"),
        or_(_T.c.notify_status.is_(None), _T.c.notify_status == NotifyStatus.RETRYING.value),
    )
    .values(
        notify_status=bindparam("new_notify_status"),
        notify_attempts=_T.c.notify_attempts + 1,
        notify_error=bindparam("new_notify_error"),
        notified_at=_NOW,
        updated_at=_NOW,
    )
    .returning(*_T.c)
)


_NO_ARTIFACT = Artifact("-", "-", "-", 0, "-")
_NO_ERROR = JobError("-", "-")


class _Shape(NamedTuple):
    """What varies between two transition statements (values are bound, not built)."""

    target: JobStatus
    error: bool
    artifact: bool
    stale: bool
    fenced: bool
    postgres: bool  # the attempt log's JSON functions are the dialect's


#: Domain fields stored in several columns.
_ARTIFACT_COLUMNS = (
    "artifact_key",
    "artifact_filename",
    "artifact_content_type",
    "artifact_size",
    "artifact_sha256",
)
_ERROR_COLUMNS = ("error_code", "error_message")


@functools.cache
def _transition_statement(shape: _Shape) -> Update:
    """``UPDATE … SET <what the domain says the target sets> WHERE <claimable> RETURNING *``."""
    entry = ENTRIES[shape.target]
    now = _NOW
    values: dict[str, Any] = {"status": shape.target.value, "updated_at": now}
    for name, value in entry.values.items():
        if name == "error":  # only ever cleared by an entry
            values.update(dict.fromkeys(_ERROR_COLUMNS, None))
        else:
            values[name] = value
    values.update(dict.fromkeys(entry.now, now))
    values.update({f: func.coalesce(_T.c[f], now) for f in entry.now_if_unset})
    values.update({f: _T.c[f] + 1 for f in entry.counted})
    if entry.worker:
        values["worker"] = bindparam("new_worker")
    if shape.error:
        values.update({c: bindparam(f"new_{c}") for c in _ERROR_COLUMNS})
    if shape.artifact:
        values.update({c: bindparam(f"new_{c}") for c in _ARTIFACT_COLUMNS})
    if shape.target is JobStatus.RUNNING or JobStatus.RUNNING in sources_of(shape.target):
        values["attempt_log"] = _logged_attempts(shape)
    claimable: ColumnElement[bool] = (
        # One array parameter: an expanding IN is re-rendered at every execution.
        _T.c.status == any_(bindparam("sources", type_=ARRAY(String)))
        if shape.postgres
        else _T.c.status.in_(bindparam("sources", expanding=True))
    )
    if shape.stale:  # a running row whose heartbeat is older: its worker is gone
        lost = and_(
            _T.c.status == JobStatus.RUNNING.value,
            _T.c.updated_at < bindparam("stale_before", type_=_T.c.updated_at.type),
        )
        claimable = or_(claimable, lost)
    if shape.fenced:  # still this worker's: not reclaimed meanwhile
        claimable = and_(claimable, _T.c.worker == bindparam("expected_worker"))
    if shape.postgres and shape.target is JobStatus.RUNNING:
        claimable = and_(claimable, _NO_FLUSH_WAIT)
    return (
        update(_T).where(_T.c.id == bindparam("job_id"), claimable).values(values).returning(*_T.c)
    )


def _logged_attempts(shape: _Shape) -> ColumnElement[Any]:
    """The domain's :func:`~app.domain.jobs.log_attempts` in SQL.

    A job leaving ``running`` ends its last attempt; entering it appends the next. Part of
    the transition's one UPDATE, so the timeline costs no statement of its own.
    """
    log = _T.c.attempt_log
    outcome = LOST if shape.target is JobStatus.RUNNING else shape.target.value
    ended: dict[str, ColumnElement[Any]] = {
        "ended_at": _NOW,
        "outcome": literal_column(f"'{outcome}'"),
        "error_code": sql_cast(bindparam("new_error_code"), Text) if shape.error else null(),
    }
    started: dict[str, ColumnElement[Any]] = {
        "number": _T.c.attempts + 1,
        "worker": sql_cast(bindparam("new_worker"), Text),
        "started_at": _NOW,
    }
    running = _T.c.status == JobStatus.RUNNING.value
    value: ColumnElement[Any]
    if shape.postgres:
        last = func.coalesce(log.op("->")(literal_column("-1")), literal_column("'{}'::jsonb"))
        ends = last.op("||")(_json_object(func.jsonb_build_object, ended))
        closed = func.jsonb_set(log, literal_column("'{-1}'"), ends, literal_column("false"))
        value = case((running, closed), else_=log)
        if shape.target is JobStatus.RUNNING:
            next_one = func.jsonb_build_array(_json_object(func.jsonb_build_object, started))
            value = value.op("||")(next_one)
        return value
    paths = (x for key, v in ended.items() for x in (literal_column(f"'$[#-1].{key}'"), v))
    value = case((running, func.json_set(log, *paths)), else_=log)
    if shape.target is JobStatus.RUNNING:
        appended = _json_object(func.json_object, started)
        value = func.json_insert(value, literal_column("'$[#]'"), appended)
    return value


def _json_object(
    build: Callable[..., ColumnElement[Any]], fields: dict[str, ColumnElement[Any]]
) -> ColumnElement[Any]:
    return build(*(x for key, v in fields.items() for x in (literal_column(f"'{key}'"), v)))


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "worker": attempt.worker,
        "started_at": attempt.started_at.isoformat(),
        "ended_at": attempt.ended_at.isoformat() if attempt.ended_at else None,
        "outcome": attempt.outcome,
        "error_code": attempt.error_code,
    }


def _attempt(value: dict[str, Any]) -> Attempt:
    ended = value.get("ended_at")
    return Attempt(
        number=value.get("number", 0),
        worker=value.get("worker"),
        started_at=_utc(value["started_at"]),
        ended_at=_utc(ended) if ended else None,
        outcome=value.get("outcome"),
        error_code=value.get("error_code"),
    )


def _utc(text_: str) -> datetime:
    """A time the database wrote into JSON, as an aware UTC datetime.

    The text is ISO 8601, with an offset (PostgreSQL, per its session's TimeZone) or
    without one (SQLite, UTC).
    """
    moment = datetime.fromisoformat(text_)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _artifact_columns(artifact: Artifact | None) -> dict[str, Any]:
    """The artifact's columns (all None without one)."""
    if artifact is None:
        return dict.fromkeys(_ARTIFACT_COLUMNS)
    return dict(zip(_ARTIFACT_COLUMNS, artifact.as_dict(key=True).values(), strict=True))


def _to_values(job: ReportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "report_type": job.report_type.value,
        "params": job.params,
        "status": job.status.value,
        "backend": job.backend.value if job.backend else None,
        "queue": job.queue.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "stage": job.stage,
        "error_code": job.error.code if job.error else None,
        "error_message": job.error.message if job.error else None,
        **_artifact_columns(job.artifact),
        "owner": job.owner,
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "worker": job.worker,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "callback_url": job.callback_url,
        "rerun_of": job.rerun_of,
        "recipients": list(job.recipients) or None,
        "attach_file": job.attach_file,
        "schedule_id": job.slot.schedule_id if job.slot else None,
        "scheduled_for": job.slot.at if job.slot else None,
        "attempt_log": [_attempt_json(a) for a in job.attempt_log],
        "document_key": job.document.key if job.document else None,
        "document_size": job.document.size_bytes if job.document else None,
        "document_sha256": job.document.sha256 if job.document else None,
        "notify_status": job.notification.status.value if job.notification else None,
        "notify_attempts": job.notification.attempts if job.notification else 0,
        "notify_error": job.notification.error if job.notification else None,
        "notified_at": job.notification.at if job.notification else None,
    }


def to_job(row: Row[Any] | ReportJobRow) -> ReportJob:
    """The domain snapshot of a ledger row (a Core row or an ORM one)."""
    artifact = None
    if row.artifact_key is not None:
        artifact = Artifact(
            key=row.artifact_key,
            filename=row.artifact_filename or "",
            content_type=row.artifact_content_type or "application/octet-stream",
            size_bytes=row.artifact_size or 0,
            sha256=row.artifact_sha256 or "",
        )
    return ReportJob(
        id=row.id,
        report_type=ReportType(row.report_type),
        params=dict(row.params),
        status=JobStatus(row.status),
        queue=Queue(row.queue),
        priority=row.priority,
        backend=Backend(row.backend) if row.backend else None,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        progress=row.progress,
        stage=row.stage,
        error=JobError(row.error_code, row.error_message or "") if row.error_code else None,
        artifact=artifact,
        owner=row.owner,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        worker=row.worker,
        created_at=row.created_at,
        updated_at=row.updated_at,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        callback_url=row.callback_url,
        rerun_of=row.rerun_of,
        attempt_log=tuple(_attempt(a) for a in row.attempt_log or ()),
        recipients=tuple(row.recipients or ()),
        attach_file=row.attach_file,
        slot=Slot(row.schedule_id, row.scheduled_for)
        if row.schedule_id is not None and row.scheduled_for is not None
        else None,
        document=_document(row),
        notification=_notification(row),
    )


def _document(row: Row[Any] | ReportJobRow) -> Artifact | None:
    if row.document_key is None:
        return None
    return Artifact(
        key=row.document_key,
        filename=row.document_key.rsplit("/", 1)[-1],
        content_type="application/zip",
        size_bytes=row.document_size or 0,
        sha256=row.document_sha256 or "",
    )


def _notification(row: Row[Any] | ReportJobRow) -> Notification | None:
    if row.notify_status is None or row.notified_at is None:
        return None
    return Notification(
        status=NotifyStatus(row.notify_status),
        attempts=row.notify_attempts,
        at=row.notified_at,
        error=row.notify_error,
    )
