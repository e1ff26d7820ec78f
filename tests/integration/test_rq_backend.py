"""The RQ backend with real workers: cancellation (``cancel_job`` for queued jobs, the stop
command for running ones), the ledger claim against stale deliveries, callback retries."""

from __future__ import annotations

import secrets
import time

import pytest
from app import bootstrap
from app.dispatch.rq_dispatcher import FUNCTIONS, RqDispatcher, rq_queue
from app.domain.jobs import NotifyStatus
from app.domain.queues import Queue, ReportType, Step
from app.domain.states import JobStatus
from app.services.cancel import cancel_job
from app.services.enqueue import enqueue_report
from app.services.queries import queue_status
from rq.job import Job
from rq.job import JobStatus as RqStatus
from rq.serializers import JSONSerializer

from tests.integration.workers import (
    CallbackReceiver,
    WorkerProcess,
    delete_redis_keys,
    leftovers,
    run_cli,
    running_with_progress,
    settings_from,
    wait_for,
)


def rq_of(container: bootstrap.Container) -> RqDispatcher:
    [broker] = container.brokers
    assert isinstance(broker, RqDispatcher)
    return broker


def rq_job(container: bootstrap.Container, rq_id: str) -> Job:
    return Job.fetch(rq_id, connection=rq_of(container).connection, serializer=JSONSerializer)


def wait_rq(
    container: bootstrap.Container, rq_id: str, statuses: set[str], timeout: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if rq_job(container, rq_id).get_status() in statuses:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"RQ job {rq_id} is {rq_job(container, rq_id).get_status()}")


def test_running_job_cancelled_stops_fast_and_worker_keeps_serving(
    rq_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    container = containers["rq"]
    deps = container.deps
    job = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 30}
    ).job
    wait_for(deps.repo, job.id, running_with_progress, timeout=20)
    assert cancel_job(deps=deps, job_id=job.id).status is JobStatus.CANCELLED
    assert wait_rq(container, str(job.id), {RqStatus.FINISHED}, 5) < 2.0
    assert rq_job(container, str(job.id)).return_value() == "cancelled"
    assert leftovers(container, job.id) == []
    after = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 2}).job
    assert wait_for(deps.repo, after.id, timeout=20).status is JobStatus.COMPLETED


@pytest.mark.timeout(90)
def test_cancelled_queued_job_is_withdrawn_and_a_stale_delivery_is_skipped(
    backend_env: dict[str, str],
) -> None:
    env = {**backend_env, "QUEUE_PREFIX": f"q{secrets.token_hex(3)}-"}  # no worker there yet
    container = bootstrap.build(settings_from(env, dispatch_backend="rq"))
    try:
        deps = container.deps
        job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
        served = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 5}).job
        assert (job.backend, job.status) == ("rq", JobStatus.QUEUED)  # waits durably
        cancel_job(deps=deps, job_id=job.id)
        wait_rq(container, str(job.id), {RqStatus.CANCELED}, 5)  # cancel_job took it out
        # A stale copy of the message (say, re-enqueued by hand) must still never run it.
        queue = rq_queue(rq_of(container).connection, container.settings.brokers, Queue.REPORTS)
        stale = queue.enqueue_call(FUNCTIONS[Step.RENDER], args=(str(job.id),))
        burst = run_cli(["manage.py", "rq-worker", "reports", "--burst"], env)
        assert burst.returncode == 0, burst.stdout + burst.stderr
        assert stale.get_status() == RqStatus.FINISHED
        assert stale.return_value() == "skipped"
        final = deps.repo.get(job.id)
        assert final is not None
        assert (final.status, final.attempts, final.started_at) == (JobStatus.CANCELLED, 0, None)
        assert wait_for(deps.repo, served.id, timeout=5).status is JobStatus.COMPLETED
    finally:
        container.close()
        delete_redis_keys(env["QUEUE_PREFIX"])


def test_stop_command_backstop_kills_the_horse_and_worker_keeps_serving(
    rq_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    container = containers["rq"]
    deps = container.deps
    stuck = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 30}
    ).job
    wait_for(deps.repo, stuck.id, running_with_progress, timeout=20)
    rq_of(container).stop_running(stuck)  # as if it ignored its checkpoints
    assert wait_rq(container, str(stuck.id), {RqStatus.STOPPED, RqStatus.FAILED}, 5) < 2.0
    served = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 6}).job
    assert wait_for(deps.repo, served.id, timeout=20).status is JobStatus.COMPLETED
    cancel_job(deps=deps, job_id=stuck.id)  # the killed attempt is the ledger's to close


@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_callback_is_retried_with_backoff_until_it_is_taken(
    backend: str,
    request: pytest.FixtureRequest,
    containers: dict[str, bootstrap.Container],
    receiver: CallbackReceiver,
) -> None:
    request.getfixturevalue(f"{backend}_session_worker")
    receiver.fail_first = 1
    deps = containers[backend].deps
    job = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={}, callback_url=receiver.url
    ).job
    done = wait_for(
        deps.repo,
        job.id,
        lambda j: j.notification is not None and j.notification.status is NotifyStatus.SENT,
        timeout=30,
    )
    assert done.notification is not None
    assert done.notification.attempts == 2
    deliveries = receiver.for_job(job.id)
    assert len(deliveries) == 2
    assert {h["x-report-delivery"] for h, _, _ in deliveries} == {str(job.id)}


def test_queue_status_counts_live_rq_workers(
    rq_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    rows = {(s.queue.value, s.backend): s for s in queue_status(deps=containers["rq"].deps)}
    for queue in ("reports", "documents", "notifications", "celery"):
        assert rows[(queue, "rq")].workers == 1
