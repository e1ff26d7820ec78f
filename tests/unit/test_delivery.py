"""The delivery policy every backend applies after an outcome."""

from __future__ import annotations

import random

import pytest
from app.domain.retry import RetryPolicy
from app.services.delivery import Outcome, OutcomeKind, next_delivery
from app.services.deps import JobPolicy

POLICY = JobPolicy(lost_worker_checks=2, defer_max_seconds=10.0)


def after(kind: OutcomeKind, retry_in: float | None = None, deliveries: int = 0) -> float | None:
    return next_delivery(Outcome(kind, None, retry_in), policy=POLICY, deliveries=deliveries)


@pytest.mark.parametrize("kind", ["retry", "interrupted"])
def test_a_retry_or_an_interrupted_attempt_comes_back_after_its_backoff(kind: OutcomeKind) -> None:
    assert after(kind, 4.0) == 4.0
    assert after(kind, 4.0, deliveries=50) == 4.0  # the ledger's MAX_ATTEMPTS ends it
    assert after(kind) == 1.0


def test_a_deferred_delivery_doubles_its_wait_up_to_the_cap_and_never_gives_up() -> None:
    waits = [after("deferred", 1.0, deliveries=n) for n in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert after("deferred", 1.0, deliveries=1000) == 10.0


def test_a_job_running_elsewhere_is_looked_at_again_a_bounded_number_of_times() -> None:
    assert after("skipped", 3.5, deliveries=0) == 3.5
    assert after("skipped", 3.5, deliveries=1) == 3.5
    assert after("skipped", 3.5, deliveries=2) is None  # LOST_WORKER_CHECKS spent
    assert after("skipped", None) is None  # finished or unknown: nothing to wait for


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
def test_a_recorded_outcome_ends_the_delivery(kind: OutcomeKind) -> None:
    assert after(kind, 5.0) is None


def test_the_ledgers_count_of_attempts_decides_the_last_and_each_wait() -> None:
    policy = RetryPolicy(60.0, 300.0, random.Random(3))  # the defaults: 60, 120, 240 s
    waits = [policy.after(attempt, 4) for attempt in range(1, 5)]
    assert waits[-1] is None  # the 4th attempt's failure is final
    for wait, nominal in zip(waits[:-1], (60, 120, 240), strict=True):
        assert wait is not None
        assert nominal <= wait <= nominal * 1.1
    assert policy.after(1, 1) is None
