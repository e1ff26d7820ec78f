"""The sync and asyncio backends on their own: how they carry out deliveries, and routing."""

from __future__ import annotations

import asyncio
import threading
from uuid import UUID

import pytest
from app.bootstrap.adapters import in_process
from app.core.config import Settings
from app.dispatch.asyncio_dispatcher import AsyncioDispatcher
from app.dispatch.inline_dispatcher import InlineDispatcher
from app.dispatch.router import Router, RoutingPolicy
from app.dispatch.sync_dispatcher import SyncDispatcher
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import DummyParams
from app.domain.queues import Backend, Queue, ReportType


def a_job() -> ReportJob:
    return ReportJob.new(
        report_type=ReportType.DUMMY, params=DummyParams(), max_attempts=4, now=utcnow()
    )


def test_sync_runs_every_delivery_in_place_within_its_budget() -> None:
    slept: list[float] = []
    delays = iter([0.5, 1.0, None])  # retry in 0.5 s, then in 1 s, then done
    calls: list[tuple[UUID, int, str]] = []

    def runner(job_id: UUID, deliveries: int) -> float | None:
        calls.append((job_id, deliveries, threading.current_thread().name))
        return next(delays)

    sync = SyncDispatcher(slots=4, wait_budget=2.0, sleep=slept.append)
    sync.bind(runner)
    job = a_job()
    sync.dispatch(job)  # returns once the job is done
    here = threading.current_thread().name
    assert calls == [(job.id, 0, here), (job.id, 1, here), (job.id, 2, here)]
    assert slept == [0.5, 1.0]


def test_sync_answers_when_the_next_delivery_is_past_its_budget() -> None:
    slept: list[float] = []
    sync = SyncDispatcher(slots=1, wait_budget=1.0, sleep=slept.append)
    sync.bind(lambda job_id, deliveries: 60.0)  # the spec's first backoff
    sync.dispatch(a_job())
    assert slept == []  # one delivery; the row stays as the ledger recorded it (retrying)


def test_asyncio_runs_the_job_as_a_task_of_the_given_loop_and_returns_at_once() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    done = threading.Event()
    seen: list[int] = []

    def runner(job_id: UUID, deliveries: int) -> float | None:
        seen.append(deliveries)
        if deliveries == 0:
            return 0.01  # retry soon: the task sleeps on the loop, then delivers again
        done.set()
        return None

    dispatcher = AsyncioDispatcher(1)
    assert not dispatcher.available(Queue.REPORTS)  # no loop yet
    with pytest.raises(BackendUnavailable):
        dispatcher.dispatch(a_job())
    dispatcher.attach(loop)
    dispatcher.bind(runner)
    try:
        assert dispatcher.available(Queue.REPORTS)
        dispatcher.dispatch(a_job())
        assert done.wait(5)
        assert seen == [0, 1]
    finally:
        dispatcher.shutdown()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("sync", SyncDispatcher), ("asyncio", AsyncioDispatcher), ("inline", InlineDispatcher)],
)
def test_forced_in_process_backend_is_the_routers_choice(mode: str, kind: type) -> None:
    settings = Settings(_env_file=None, dispatch_backend=mode)
    adapter = in_process(settings, None)
    assert adapter is not None
    assert isinstance(adapter, kind)
    router = Router([], inline=adapter, policy=RoutingPolicy(forced=Backend(mode)))
    if isinstance(adapter, AsyncioDispatcher):  # no event loop attached: 503, not a fallback
        with pytest.raises(BackendUnavailable):
            router.choose(a_job())
    else:
        assert router.choose(a_job()) is Backend(mode)
    adapter.shutdown()


@pytest.mark.parametrize("environment", ["development", "production"])
def test_auto_never_picks_sync_or_asyncio(environment: str) -> None:
    settings = Settings(_env_file=None, environment=environment)
    adapter = in_process(settings, None)
    assert adapter is None or adapter.backend is Backend.INLINE
