"""The console's logic: sessions from an API key, CSRF, and what each page shows.

A browser signs in with an API key once; the console then knows it by a random session
token in an HttpOnly cookie. The ledger keeps only the token's SHA-256, the caller and a
CSRF token: a session works on every API replica, ends at sign-out or after
:data:`IDLE_TIMEOUT` without a request, and ends with its key (a revoked key's sessions
are refused at their next request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from uuid import UUID

from app.domain.auth import ApiKeyRepository, Principal, Role
from app.domain.console import ConsoleFilter, ConsoleRepository, ConsoleSession
from app.domain.errors import Forbidden, Unauthenticated
from app.domain.jobs import ReportJob
from app.domain.ledger import Cursor, JobPage
from app.domain.operations import DailyStats, HousekeepingRepository
from app.domain.queues import Backend
from app.domain.states import JobStatus
from app.services.auth import authenticate
from app.services.daily_stats import get_daily_stats
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from app.services.queries import QueueStatus, get_job, queue_status

#: A session unused for this long is signed out (``CONSOLE_IDLE_MINUTES``'s default).
IDLE_TIMEOUT = timedelta(minutes=30)
#: ``last_seen`` is written at most this often per session (not on every request).
TOUCH_EVERY = timedelta(seconds=60)
PAGE_SIZE = 25
#: The caller of the console while API keys are off (development only).
DEVELOPER = Principal(owner="development", role=Role.OPERATOR, key_id="development")


def token_hash(token: str) -> str:
    """The SHA-256 (hex) of a session token: all the ledger keeps of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(
    *,
    keys: ApiKeyRepository,
    console: ConsoleRepository,
    presented: str | None,
    now: datetime,
    keys_required: bool,
    idle: timedelta = IDLE_TIMEOUT,
) -> tuple[str, ConsoleSession]:
    """A new session for the caller ``presented`` stands for; the cookie's token and it.

    Raises:
        Unauthenticated: a missing, unknown or revoked key (when keys are required).
    """
    principal = authenticate(keys, presented) if keys_required else DEVELOPER
    token = secrets.token_urlsafe(32)
    session = ConsoleSession(
        token_hash=token_hash(token),
        owner=principal.owner,
        role=principal.role,
        key_id=principal.key_id,
        csrf=secrets.token_urlsafe(24),
        created_at=now,
        last_seen=now,
    )
    console.add_session(session)
    console.delete_idle_sessions(now - idle)
    return token, session


def resolve_session(
    *,
    console: ConsoleRepository,
    token: str | None,
    now: datetime,
    keys_required: bool,
    idle: timedelta = IDLE_TIMEOUT,
) -> ConsoleSession:
    """The live session of a cookie.

    Raises:
        Unauthenticated: no cookie, an unknown or idle session, or a revoked key.
    """
    found = console.find_session(token_hash(token)) if token else None
    if found is None:
        raise Unauthenticated("Sign in to the console.", code="CONSOLE_SIGN_IN")
    session, key_active = found
    if now - session.last_seen > idle:
        console.delete_session(session.token_hash)
        raise Unauthenticated("The session timed out: sign in again.", code="CONSOLE_SIGN_IN")
    if keys_required and not key_active:
        console.delete_session(session.token_hash)
        raise Unauthenticated("The key was revoked: sign in again.", code="CONSOLE_SIGN_IN")
    if now - session.last_seen > TOUCH_EVERY:
        console.touch_session(session.token_hash, now=now)
        session = replace(session, last_seen=now)
    return session


def check_csrf(session: ConsoleSession, presented: str | None) -> None:
    """Raises Forbidden (``CSRF_FAILED``) unless the form carried the session's token."""
    if not presented or not hmac.compare_digest(presented, session.csrf):
        raise Forbidden("The form's CSRF token is missing or wrong.", code="CSRF_FAILED")


def sign_out(*, console: ConsoleRepository, token: str | None) -> None:
    """End the session of the cookie's ``token``; no cookie, or an unknown one, is no error."""
    if token:
        console.delete_session(token_hash(token))


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True, slots=True)
class JobsView:
    """The jobs page: a page of jobs, and the counts per status (the filter's status aside)."""

    page: JobPage
    counts: Mapping[JobStatus, int]


def jobs_view(
    *, console: ConsoleRepository, caller: Principal, where: ConsoleFilter, after: Cursor | None
) -> JobsView:
    """A page of jobs and the counts per status; a submitter sees only its own jobs."""
    if caller.scope is not None:
        where = replace(where, owner=caller.scope)
    page = console.jobs(where, limit=PAGE_SIZE, after=after)
    return JobsView(page, console.count_by_status(where))


def progress_of(
    *, console: ConsoleRepository, caller: Principal, job_ids: Sequence[UUID]
) -> list[ReportJob]:
    """The jobs among ``job_ids`` (at most a page) that the caller may see: one query."""
    where = ConsoleFilter(ids=frozenset(job_ids[:PAGE_SIZE]), owner=caller.scope)
    return list(console.jobs(where, limit=PAGE_SIZE, after=None).items)


def run_again(*, deps: Deps, caller: Principal, job_id: UUID) -> ReportJob:
    """A new job with the same type and parameters, owned by the caller, linked to it."""
    job = get_job(deps=deps, job_id=job_id, owner=caller.scope)
    return enqueue_report(
        deps=deps,
        report_type=job.report_type,
        params=job.params,
        owner=caller.owner,
        rerun_of=job.id,
    ).job


def reruns_of(*, console: ConsoleRepository, caller: Principal, job_id: UUID) -> list[ReportJob]:
    """The jobs started by "Run again" from this one that the caller may see, newest first."""
    where = ConsoleFilter(rerun_of=job_id, owner=caller.scope)
    return list(console.jobs(where, limit=PAGE_SIZE, after=None).items)


@dataclass(frozen=True, slots=True)
class QueuesView:
    """The queues page: per queue and backend, waiting, running and workers.

    ``rq_idle_minutes``: since RQ's last job changed, when RQ has no work (None: never
    ran one here, or busy).
    """

    queues: Sequence[QueueStatus]
    rq_busy: bool
    rq_idle_minutes: int | None


def queues_view(*, deps: Deps, console: ConsoleRepository) -> QueuesView:
    """Per queue and backend, waiting, running and workers; whether RQ still has work."""
    queues = queue_status(deps=deps)
    busy = any(q.backend is Backend.RQ and (q.waiting or q.running) for q in queues)
    last = None if busy else console.last_activity(Backend.RQ)
    idle = None if last is None else int((deps.clock() - last).total_seconds() // 60)
    return QueuesView(queues, busy, idle)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a chart: its label, value and length in percent of the longest."""

    label: str
    value: float
    percent: float


def bars(values: Mapping[str, float]) -> list[Bar]:
    """Bars scaled to the largest value (which gets 100)."""
    top = max(values.values(), default=0) or 1
    return [Bar(label, value, round(100 * value / top, 1)) for label, value in values.items()]


@dataclass(frozen=True, slots=True)
class StatsView:
    """The daily figures as charts: jobs by status and backend, p50/p95 by type."""

    stats: DailyStats
    by_status_backend: list[Bar]
    p50: list[Bar]
    p95: list[Bar]


def stats_view(*, ops: HousekeepingRepository, day: date | None) -> StatsView:
    """The stored figures of ``day`` (default: the latest), ready to draw.

    Raises:
        StatsNotFound: no figures for that day (Beat computes them at midnight).
    """
    stats = get_daily_stats(ops=ops, day=day)
    counted: dict[str, float] = {}
    for row in stats.figures.get("counts", []):
        key = f"{row['status']} · {row['backend']}"
        counted[key] = counted.get(key, 0) + row["count"]
    by_type = stats.figures.get("by_type", [])

    def timing(name: str) -> dict[str, float]:
        return {
            f"{r['report_type']} · {r['backend']}": r[name]
            for r in by_type
            if r.get(name) is not None
        }

    return StatsView(
        stats,
        bars(dict(sorted(counted.items()))),
        bars(timing("p50_seconds")),
        bars(timing("p95_seconds")),
    )
