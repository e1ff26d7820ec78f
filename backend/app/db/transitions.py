"""The ledger's transitions as SQL: one conditional UPDATE each, in two dialects.

:func:`transition_statement` turns the domain's :data:`~app.domain.states.ENTRIES` into
``UPDATE … SET … WHERE <claimable> RETURNING *``, its attempt timeline included
(:func:`logged_attempts`, with PostgreSQL's JSONB functions or SQLite's JSON ones);
:func:`progress_statement` is the heartbeat. Each shape is built once and cached: only
values are bound per call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal_column,
    null,
    or_,
    text,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from app.db.job_rows import ARTIFACT_COLUMNS, JOBS
from app.domain.states import ENTRIES, LOST, JobStatus, sources_of

#: The time of a write, typed so that the ledger's UTC rule applies to it.
NOW = bindparam("now", type_=JOBS.c.updated_at.type)
#: Part of a statement's WHERE on PostgreSQL: the one-statement transaction it runs in
#: commits without waiting for the WAL flush (``SET LOCAL synchronous_commit = off``, in
#: the same round trip). The write is visible to every session at once, so the
#: conditional claim, cancellation and fencing are unchanged; only a crash of PostgreSQL
#: itself can lose it, within ~3 × ``wal_writer_delay``. Used where such a loss costs no
#: job: a heartbeat (the next one, or the outcome, replaces it) and the claim (lost, the
#: row is back where it was; the worker running it is fenced out at its next write and
#: the job runs again, at least once as after any crash). The insert and the outcome
#: wait for the flush: a client may have seen them.
NO_FLUSH_WAIT = text("set_config('synchronous_commit', 'off', true) = 'off'")


@functools.cache
def progress_statement(*, fenced: bool, postgres: bool) -> Update:
    """The heartbeat: progress and stage of a running job (``fenced``: of this worker's)."""
    stmt = (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), JOBS.c.status == JobStatus.RUNNING.value)
        .values(progress=bindparam("new_progress"), stage=bindparam("new_stage"), updated_at=NOW)
    )
    if fenced:
        stmt = stmt.where(JOBS.c.worker == bindparam("expected_worker"))
    return stmt.where(NO_FLUSH_WAIT) if postgres else stmt


class Shape(NamedTuple):
    """What varies between two transition statements (values are bound, not built)."""

    target: JobStatus
    error: bool
    artifact: bool
    stale: bool
    fenced: bool
    postgres: bool  # the attempt log's JSON functions are the dialect's


ERROR_COLUMNS = ("error_code", "error_message")


@functools.cache
def transition_statement(shape: Shape) -> Update:
    """``UPDATE … SET <what the domain says the target sets> WHERE <claimable> RETURNING *``."""
    entry = ENTRIES[shape.target]
    now = NOW
    values: dict[str, Any] = {"status": shape.target.value, "updated_at": now}
    for name, value in entry.values.items():
        if name == "error":  # only ever cleared by an entry
            values.update(dict.fromkeys(ERROR_COLUMNS, None))
        else:
            values[name] = value
    values.update(dict.fromkeys(entry.now, now))
    values.update({f: func.coalesce(JOBS.c[f], now) for f in entry.now_if_unset})
    values.update({f: JOBS.c[f] + 1 for f in entry.counted})
    if entry.worker:
        values["worker"] = bindparam("new_worker")
    if shape.error:
        values.update({c: bindparam(f"new_{c}") for c in ERROR_COLUMNS})
    if shape.artifact:
        values.update({c: bindparam(f"new_{c}") for c in ARTIFACT_COLUMNS})
    if shape.target is JobStatus.RUNNING or JobStatus.RUNNING in sources_of(shape.target):
        values["attempt_log"] = logged_attempts(shape)
    claimable: ColumnElement[bool] = (
        # One array parameter: an expanding IN is re-rendered at every execution.
        JOBS.c.status == any_(bindparam("sources", type_=ARRAY(String)))
        if shape.postgres
        else JOBS.c.status.in_(bindparam("sources", expanding=True))
    )
    if shape.stale:  # a running row whose heartbeat is older: its worker is gone
        lost = and_(
            JOBS.c.status == JobStatus.RUNNING.value,
            JOBS.c.updated_at < bindparam("stale_before", type_=JOBS.c.updated_at.type),
        )
        claimable = or_(claimable, lost)
    if shape.fenced:  # still this worker's: not reclaimed meanwhile
        claimable = and_(claimable, JOBS.c.worker == bindparam("expected_worker"))
    if shape.postgres and shape.target is JobStatus.RUNNING:
        claimable = and_(claimable, NO_FLUSH_WAIT)
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), claimable)
        .values(values)
        .returning(*JOBS.c)
    )


def logged_attempts(shape: Shape) -> ColumnElement[Any]:
    """The domain's :func:`~app.domain.states.log_attempts` in SQL.

    A job leaving ``running`` ends its last attempt; entering it appends the next. Part of
    the transition's one UPDATE, so the timeline costs no statement of its own.
    """
    log = JOBS.c.attempt_log
    outcome = LOST if shape.target is JobStatus.RUNNING else shape.target.value
    ended: dict[str, ColumnElement[Any]] = {
        "ended_at": NOW,
        "outcome": literal_column(f"'{outcome}'"),
        "error_code": sql_cast(bindparam("new_error_code"), Text) if shape.error else null(),
    }
    started: dict[str, ColumnElement[Any]] = {
        "number": JOBS.c.attempts + 1,
        "worker": sql_cast(bindparam("new_worker"), Text),
        "started_at": NOW,
    }
    running = JOBS.c.status == JobStatus.RUNNING.value
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
