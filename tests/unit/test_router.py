"""The router's choice, traffic split and fallbacks, with in-memory backends (no broker)."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from app.core.circuit import CircuitBreaker
from app.dispatch.availability import Availability
from app.dispatch.base import BrokeredBackend
from app.dispatch.router import Fallback, Router, RoutingPolicy
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.params import DummyParams
from app.domain.queues import Backend, Queue, ReportType
from app.domain.traffic import TrafficSplit

from tests.unit.fakes import RecordingDispatcher


class FakeInline(RecordingDispatcher):
    def available(self, queue: Queue) -> bool:
        return queue is Queue.REPORTS


class FakeBroker(BrokeredBackend):
    """A broker whose probe answer and publish outcome the test sets."""

    def __init__(self, backend: Backend, *, workers: int = 1, reachable: bool = True) -> None:
        self.backend = backend
        self.answer = Availability(reachable, {Queue.REPORTS: workers} if workers else {})
        self.probe_delay = 0.0
        self.fail_publish = False
        self.published: list[uuid.UUID] = []
        self.withdrawn: list[uuid.UUID] = []
        self.stopped: list[uuid.UUID] = []
        super().__init__(
            breaker=CircuitBreaker(failures=2, reset_after=60),
            probe_interval=0.05,
            probe_wait=1.0,
            cancel_grace=0.05,
        )

    def probe(self) -> Availability:
        time.sleep(self.probe_delay)
        return self.answer

    def ping(self, timeout: float) -> None:
        if not self.answer.reachable:
            raise ConnectionError("broker down")

    def publish(self, job: ReportJob) -> None:
        if self.fail_publish:
            raise ConnectionError("broker went away")
        self.published.append(job.id)

    def withdraw(self, job: ReportJob) -> None:
        self.withdrawn.append(job.id)

    def stop_running(self, job: ReportJob) -> None:
        self.stopped.append(job.id)


def job_for(share: int, *, celery: bool, report_type: ReportType = ReportType.DUMMY) -> ReportJob:
    """A job whose id lands on the Celery side of ``share`` (or not)."""
    while True:
        job = ReportJob.new(
            report_type=report_type, params=DummyParams(), max_attempts=3, now=datetime.now(UTC)
        )
        if (job.id.int % 100 < share) is celery:
            return job


@pytest.fixture
def celery() -> FakeBroker:
    return FakeBroker(Backend.CELERY)


@pytest.fixture
def rq() -> FakeBroker:
    return FakeBroker(Backend.RQ)


def router(
    *brokers: FakeBroker, inline: bool = False, celery_percent: int = 100, **policy: object
) -> Router:
    return Router(
        brokers,
        inline=FakeInline(Backend.INLINE) if inline else None,
        policy=RoutingPolicy(split=TrafficSplit(celery_percent), **policy),  # type: ignore[arg-type]
    )


def test_celery_first_when_its_worker_consumes_the_queue(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    chooser = router(celery, rq)
    assert chooser.choose(job_for(100, celery=True)) is Backend.CELERY
    assert chooser.fallback_counts() == {}


def test_no_celery_worker_falls_back_to_rq_and_counts_it(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    celery.answer = Availability(True, {})
    seen: list[Fallback] = []
    chooser = router(celery, rq)
    chooser.add_fallback_listener(seen.append)
    assert chooser.choose(job_for(100, celery=True)) is Backend.RQ
    assert chooser.fallback_counts() == {("celery", "rq", "no worker consumes reports"): 1}
    assert seen == [Fallback(Backend.CELERY, Backend.RQ, "no worker consumes reports")]


def test_no_worker_anywhere_runs_inline_where_allowed(celery: FakeBroker, rq: FakeBroker) -> None:
    celery.answer = rq.answer = Availability(True, {})
    assert (
        router(celery, rq, inline=True, inline_allowed=True).choose(job_for(100, celery=True))
        is Backend.INLINE
    )


def test_no_worker_and_no_inline_waits_durably_on_the_preferred_broker(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    celery.answer = rq.answer = Availability(True, {})
    chooser = router(celery, rq, inline=True, inline_allowed=False, celery_percent=50)
    assert chooser.choose(job_for(50, celery=True)) is Backend.CELERY
    assert chooser.choose(job_for(50, celery=False)) is Backend.RQ


def test_nothing_reachable_and_no_inline_is_backend_unavailable(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    celery.answer = rq.answer = Availability(False, {}, "refused")
    with pytest.raises(BackendUnavailable, match="broker unreachable"):
        router(celery, rq).choose(job_for(100, celery=True))


def test_forcing_a_backend_ignores_the_others(celery: FakeBroker, rq: FakeBroker) -> None:
    assert router(celery, rq, forced=Backend.RQ).choose(job_for(100, celery=True)) is Backend.RQ
    down = FakeBroker(Backend.RQ, reachable=False)
    with pytest.raises(BackendUnavailable):
        router(celery, down, forced=Backend.RQ).choose(job_for(100, celery=True))
    forced_inline = router(celery, rq, inline=True, forced=Backend.INLINE)
    assert forced_inline.choose(job_for(100, celery=True)) is Backend.INLINE


def test_traffic_split_is_deterministic_and_proportional() -> None:
    policy = RoutingPolicy(split=TrafficSplit(30, {ReportType.PDF: 100}))
    jobs = [job_for(0, celery=False) for _ in range(2000)]
    share = sum(policy.prefers_celery(j) for j in jobs) / len(jobs)
    assert 0.25 < share < 0.35
    assert all(policy.prefers_celery(j) == policy.prefers_celery(replace(j)) for j in jobs[:50])
    assert all(policy.prefers_celery(replace(j, report_type=ReportType.PDF)) for j in jobs[:50])


def test_rq_preferred_side_of_the_split_goes_to_rq_first(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    chooser = router(celery, rq, celery_percent=40)
    assert chooser.choose(job_for(40, celery=False)) is Backend.RQ
    assert chooser.choose(job_for(40, celery=True)) is Backend.CELERY


def test_a_slow_probe_never_holds_a_choice_more_than_a_second(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    celery.probe_delay = rq.probe_delay = 2.0
    started = time.monotonic()
    chooser = router(celery, rq, inline=True, inline_allowed=True)
    assert chooser.choose(job_for(100, celery=True)) is Backend.INLINE
    # The probe's wait is 1 s: the choice is bounded by it, whatever the probe does.
    assert time.monotonic() - started < 1.5
    again = time.monotonic()
    assert chooser.choose(job_for(100, celery=True)) is Backend.INLINE
    # The first probe is still running: no second wait (a wait would take the full 1 s).
    assert time.monotonic() - again < 0.5
    celery.close()
    rq.close()


def test_failed_publishes_open_the_circuit_and_traffic_moves_on(
    celery: FakeBroker, rq: FakeBroker
) -> None:
    chooser = router(celery, rq)
    celery.fail_publish = True
    for _ in range(2):
        job = job_for(100, celery=True).with_backend(chooser.choose(job_for(100, celery=True)))
        with pytest.raises(BackendUnavailable):
            chooser.dispatch(job)
    assert chooser.choose(job_for(100, celery=True)) is Backend.RQ
    assert ("celery", "rq", "circuit open after failed publishes") in chooser.fallback_counts()
    with pytest.raises(BackendUnavailable, match="failing"):
        celery.dispatch(job_for(100, celery=True))


def test_cancel_withdraws_now_and_stops_a_started_job_after_the_grace(celery: FakeBroker) -> None:
    queued = job_for(100, celery=True).with_backend(Backend.CELERY)
    started = replace(queued, id=uuid.uuid4(), started_at=datetime.now(UTC))
    chooser = router(celery)
    chooser.cancel(queued)
    chooser.cancel(started)
    deadline = time.monotonic() + 2
    while len(celery.stopped) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(celery.withdrawn) == sorted([queued.id, started.id])
    assert celery.stopped == [started.id]


def test_workers_report_every_queue_of_every_backend(celery: FakeBroker, rq: FakeBroker) -> None:
    rq.answer = Availability(True, {Queue.REPORTS: 2, Queue.DOCUMENTS: 1})
    counts = {(w.backend, w.queue): w.workers for w in router(celery, rq, inline=True).workers()}
    assert counts[(Backend.RQ, Queue.REPORTS)] == 2
    assert counts[(Backend.RQ, Queue.NOTIFICATIONS)] == 0
    assert counts[(Backend.CELERY, Queue.REPORTS)] == 1
    assert counts[(Backend.INLINE, Queue.REPORTS)] == 2


def test_monitor_stops_cleanly(celery: FakeBroker) -> None:
    celery.start()
    thread = celery.monitor._thread
    celery.close()
    assert thread is not None
    assert not thread.is_alive()
