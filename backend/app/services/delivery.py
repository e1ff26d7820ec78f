"""One delivery policy for every backend: when, if ever, a job's message is delivered again.

The answer follows from the outcome of the delivery that just ended. The backends only
translate it: Celery re-publishes with a countdown, the inline pool starts a timer, an RQ
work horse waits in place (RQ cannot delay one delivery; the attempts' own retries go
through RQ's ``Retry``, set at enqueue from the same backoff).
"""

from __future__ import annotations

from app.services.deps import JobPolicy
from app.services.run_report import RunOutcome


def next_delivery(outcome: RunOutcome, *, policy: JobPolicy, deliveries: int) -> float | None:
    """Seconds until the job is delivered again, or ``None``: this delivery is its last.

    ``deliveries`` counts the earlier re-deliveries of this message.

    - ``retry`` (an attempt failed and may run again) and ``interrupted`` (the worker is
      stopping): after the outcome's backoff; the ledger's ``MAX_ATTEMPTS`` ends it.
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
