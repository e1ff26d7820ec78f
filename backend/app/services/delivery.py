"""The delivery engine: when, if ever, a step of a job is delivered again.

Every step (render, package, notify) answers with an :class:`Outcome`, and decides what
is final from the ledger's own count of attempts
(:meth:`~app.domain.retry.RetryPolicy.after`); a step that meets a ledger that does not
answer is ``deferred``, whichever step it is. One function, :func:`next_delivery`,
decides whether and when the step is delivered again. The backends only carry the
decision out: Celery re-publishes with a countdown, RQ schedules the same RQ job again
(a ``Retry`` returned with the decided interval), the inline pool starts a timer, the
sync backend sleeps in place, the asyncio task sleeps on its loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from app.domain.jobs import ReportJob
from app.services.deps import JobPolicy

log = logging.getLogger(__name__)

OutcomeKind = Literal[
    "completed",
    "failed",
    "cancelled",
    "retry",
    "skipped",
    "interrupted",
    "deferred",
    "packaged",
    "sent",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery of a step did, and the job as last read (None: unknown).

    ``retry_in`` says when the step wants to run again: after a retryable failure (the
    ledger counts the attempts), after the ledger's outage (``deferred``), or once the
    heartbeat of the worker running the job would be stale (``skipped``).
    """

    kind: OutcomeKind
    job: ReportJob | None
    retry_in: float | None = None


def deferred(policy: JobPolicy, step: str) -> Outcome:
    """The outcome of a delivery that met a ledger that does not answer: nothing decided."""
    retry_in = policy.retry.jittered(1.0)  # from 1 s: the ledger's outages are short
    log.warning("report_job.step.deferred", extra={"step": step, "retry_in": round(retry_in, 3)})
    return Outcome("deferred", None, retry_in=retry_in)


def next_delivery(outcome: Outcome, *, policy: JobPolicy, deliveries: int) -> float | None:
    """Seconds until the step is delivered again, or ``None``: this delivery is its last.

    ``deliveries`` counts the earlier re-deliveries of this message.

    - ``retry`` (an attempt failed and may run again) and ``interrupted`` (the worker is
      stopping): after the outcome's backoff; the ledger's count of attempts ends it.
    - ``deferred`` (the ledger did not answer): from 1 s, doubling per delivery, capped by
      ``DEFER_MAX_SECONDS``; the job's state is unknown, so never given up here.
    - ``skipped`` while another worker runs it: when that worker's heartbeat would be stale,
      at most ``LOST_WORKER_CHECKS`` times (then Beat's recovery is the backstop).
    - anything else is recorded in the ledger: nothing more to deliver.
    """
    if outcome.kind in ("retry", "interrupted"):
        return outcome.retry_in or 1.0
    if outcome.kind == "deferred":
        first = outcome.retry_in or 1.0
        return min(policy.defer_max_seconds, first * 2.0 ** min(deliveries, 6))
    if outcome.kind == "skipped" and outcome.retry_in is not None:
        return outcome.retry_in if deliveries < policy.lost_worker_checks else None
    return None
