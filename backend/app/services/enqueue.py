"""Enqueue: validate, write the ledger row, then hand the id to a backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from app.domain.errors import (
    CallbackNotAllowed,
    IdempotencyConflict,
    IdempotencyKeyTaken,
    Unavailable,
)
from app.domain.jobs import JobError, ReportJob, Slot
from app.domain.mail import check_recipients
from app.domain.params import parse_params
from app.domain.queues import ReportType
from app.domain.states import JobStatus, enter
from app.services.deps import Deps

_QUEUED = frozenset({JobStatus.QUEUED})


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The job, and whether this call created it (``False``: an Idempotency-Key replay)."""

    job: ReportJob
    created: bool = True


def enqueue_report(
    *,
    deps: Deps,
    report_type: ReportType,
    params: Mapping[str, Any],
    owner: str | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    rerun_of: UUID | None = None,
    recipients: Sequence[str] = (),
    attach_file: bool = True,
    slot: Slot | None = None,
) -> Enqueued:
    """Create a job and dispatch it: commit first, then send (the row exists before the message).

    The job comes back as inserted (``queued``), except on a backend that runs it within
    the dispatch (``sync``): then as the ledger has it once dispatch returned (finished).

    With an ``idempotency_key``, the same owner sending the same request again gets the
    job the first call made, whatever its state; the ledger's unique (owner, key) index
    settles concurrent first calls. ``recipients`` are emailed once the job ends; a
    ``slot`` makes the job a schedule's run (one per slot: the ledger refuses a second).

    Raises:
        InvalidParams: the parameters do not fit the report type; nothing is written.
        InvalidRecipients: an address is invalid, or too many; nothing is written.
        SlotTaken: the slot already has its job; nothing is written.
        CallbackNotAllowed: ``callback_url`` is not an allowed target; nothing is written.
        IdempotencyConflict: the key was used by this owner for a different request.
        Unavailable: no backend can take the job; the row is recorded ``failed`` with the code.
    """
    typed = parse_params(report_type, dict(params))
    addresses = check_recipients(recipients, limit=deps.policy.max_recipients)
    if callback_url is not None:
        if deps.callbacks is None:
            raise CallbackNotAllowed("Callbacks are not enabled on this platform.")
        deps.callbacks.validate(callback_url)
    job = ReportJob.new(
        report_type=report_type,
        params=typed,
        max_attempts=deps.policy.max_attempts,
        now=deps.clock(),
        owner=owner,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        rerun_of=rerun_of,
        recipients=addresses,
        attach_file=attach_file,
        slot=slot,
    )
    if idempotency_key is not None:
        job = _with_request_hash(job)
        earlier = deps.repo.find_idempotent(owner, idempotency_key)
        if earlier is not None:
            return _replay(earlier, job)
    # One commit: the row is written "queued", then published. A process that dies between
    # the two leaves a queued row no broker has: Beat's recovery re-dispatches it.
    job = enter(job.with_backend(deps.dispatcher.choose(job)), JobStatus.QUEUED, now=job.created_at)
    try:
        deps.repo.add(job)
    except IdempotencyKeyTaken as taken:  # a concurrent first request won the insert
        return _replay(taken.earlier, job)
    try:
        deps.dispatcher.dispatch(job)
    except Unavailable as exc:
        failed = deps.repo.transition(
            job.id,
            JobStatus.FAILED,
            now=deps.clock(),
            expected=_QUEUED,
            error=JobError(exc.code, exc.message),
        )
        deps.observer.job_event("dispatch_failed", failed or job, error=exc.code)
        raise
    deps.observer.job_event("enqueued", job)
    if job.backend is not None and job.backend.in_request:  # it ran: answer with its outcome
        job = deps.repo.get(job.id) or job
    return Enqueued(job)


def _with_request_hash(job: ReportJob) -> ReportJob:
    """What makes two requests "the same": report type, validated params, callback, emails."""
    request: list[Any] = [job.report_type.value, job.params, job.callback_url]
    if job.recipients:  # (absent from the hash of a request without them, as before)
        request += [list(job.recipients), job.attach_file]
    canonical = json.dumps(request, sort_keys=True, default=str)
    return replace(job, request_hash=hashlib.sha256(canonical.encode()).hexdigest())


def _replay(earlier: ReportJob, request: ReportJob) -> Enqueued:
    if earlier.request_hash != request.request_hash:
        assert request.idempotency_key is not None
        raise IdempotencyConflict(request.idempotency_key)
    return Enqueued(earlier, created=False)
