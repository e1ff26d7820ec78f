"""The contract: the same scenario through inline, sync, asyncio, Celery (on Redis and on
RabbitMQ) and RQ gives the same ledger rows and byte-identical artifacts — backends only
carry ids; ``run_report`` does the work. Every scenario applies to every backend: sync
carries out each later delivery (a retry, a wait for the ledger) in the dispatching thread,
so here that thread is not the one that ends the ledger outage."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from app import bootstrap
from app.core.logging import TextFormatter
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import parse_params
from app.domain.progress import NullProgress
from app.domain.queues import Backend, ReportType
from app.domain.states import LOST, JobStatus, enter
from app.reports import default_renderers
from app.services.enqueue import enqueue_report
from app.services.lost_worker import WORKER_LOST
from app.webhooks import signature

from tests.integration.ops import Gate, ledger_refused
from tests.integration.workers import (
    CALLBACK_SECRET,
    CallbackReceiver,
    WorkerProcess,
    celery_worker,
    file_sha256,
    on_rabbitmq,
    settings_from,
    wait_for,
    wait_until,
)
from tests.smtp import SmtpServer

SCENARIO: list[tuple[ReportType, dict[str, Any]]] = [
    (ReportType.DUMMY, {"seed": 7}),
    (ReportType.PDF, {"pages": 2, "seed": 3}),
    (ReportType.EXCEL, {"rows": 40, "sheets": 1, "seed": 5}),
]


def reference_sha256(tmp_path: Path, report_type: ReportType, params: dict[str, Any]) -> str:
    """The artifact rendered directly, with no job, queue or ledger."""
    renderer = default_renderers()[report_type]
    target = tmp_path / f"{report_type.value}.{renderer.extension}"
    renderer.render(parse_params(report_type, params), target, NullProgress())
    return file_sha256(target)


@pytest.fixture(scope="module")
def rabbitmq_env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The session's environment with a RabbitMQ broker, on queues of its own."""
    with on_rabbitmq(backend_env) as env:
        yield env


@pytest.fixture(scope="module")
def rabbitmq_platform(rabbitmq_env: dict[str, str], log_dir: Path) -> Iterator[bootstrap.Container]:
    """A Celery worker on RabbitMQ (every queue) and an API-side container sending to it."""
    for _ in celery_worker(rabbitmq_env, log_dir, concurrency=2):
        container = bootstrap.build(settings_from(rabbitmq_env, dispatch_backend="celery"))
        assert container.settings.brokers.celery_broker_url.startswith("amqp://")
        try:
            yield container
        finally:
            container.close()


@pytest.fixture(scope="module")
def asyncio_platform(backend_env: dict[str, str]) -> Iterator[bootstrap.Container]:
    """An API-side container on the asyncio backend, its loop running in a thread of its
    own (as uvicorn's loop runs beside the threads that enqueue)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    container = bootstrap.build(settings_from(backend_env, dispatch_backend="asyncio"), loop=loop)
    try:
        yield container
    finally:
        container.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(params=["inline", "sync", "asyncio", "celery", "rq", "celery-rabbitmq"])
def platform(
    request: pytest.FixtureRequest, containers: dict[str, bootstrap.Container]
) -> tuple[str, bootstrap.Container]:
    """(the backend the rows must name, the container that enqueues)."""
    if request.param == "celery-rabbitmq":
        rabbitmq: bootstrap.Container = request.getfixturevalue("rabbitmq_platform")
        return "celery", rabbitmq
    if request.param == "asyncio":
        return "asyncio", request.getfixturevalue("asyncio_platform")
    if not Backend(request.param).in_process:  # the real worker for this backend must run
        request.getfixturevalue(f"{request.param}_session_worker")
    backend: str = request.param
    return backend, containers[backend]


@pytest.mark.timeout(90)
def test_same_scenario_same_rows_and_artifacts(
    platform: tuple[str, bootstrap.Container],
    receiver: CallbackReceiver,
    tmp_path: Path,
) -> None:
    backend, container = platform
    deps = container.deps
    jobs = [
        enqueue_report(deps=deps, report_type=t, params=p, callback_url=receiver.url).job
        for t, p in SCENARIO
    ]
    retried = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"simulate_failures": 2}
    ).job
    doomed = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"simulate_failures": 5}
    ).job
    assert {j.backend.value for j in [*jobs, retried, doomed] if j.backend} == {backend}

    for job, (report_type, params) in zip(jobs, SCENARIO, strict=True):
        done = wait_for(deps.repo, job.id, lambda j: j.notification is not None, timeout=60)
        assert (done.status, done.attempts, done.progress, done.error) == (
            JobStatus.COMPLETED,
            1,
            100,
            None,
        )
        assert done.artifact is not None
        on_disk = deps.store.local_path(done.artifact)
        assert done.artifact.sha256 == file_sha256(on_disk)
        assert done.artifact.sha256 == reference_sha256(tmp_path, report_type, params)
        # documents queue: a package with the report and its metadata, recorded on the row
        assert done.document is not None
        with zipfile.ZipFile(deps.store.local_path(done.document)) as package:
            assert package.read(done.artifact.filename) == on_disk.read_bytes()
            assert b'"sha256": "' + done.artifact.sha256.encode() in package.read("metadata.json")
        # notifications queue: one signed POST of the finished job
        assert done.notification is not None
        assert (done.notification.status.value, done.notification.attempts) == ("sent", 1)
        [(headers, body, raw)] = receiver.for_job(job.id)
        assert body["job"]["status"] == "completed"
        assert body["job"]["artifact"]["sha256"] == done.artifact.sha256
        assert headers["x-report-signature"] == signature(
            CALLBACK_SECRET, headers["x-report-timestamp"], raw
        )

    retried_done = wait_for(deps.repo, retried.id, timeout=60)
    if Backend(backend).in_request:  # sync: each enqueue answered with the finished row
        for answer in [*jobs, retried, doomed]:
            final = deps.repo.get(answer.id)
            assert final is not None
            assert (answer.status, answer.attempts, answer.artifact, answer.notification) == (
                final.status,
                final.attempts,
                final.artifact,
                final.notification,
            )
    assert (retried_done.status, retried_done.attempts, retried_done.error) == (
        JobStatus.COMPLETED,
        3,
        None,
    )
    doomed_done = wait_for(deps.repo, doomed.id, timeout=60)
    assert (doomed_done.status, doomed_done.attempts, doomed_done.artifact) == (
        JobStatus.FAILED,
        4,  # MAX_ATTEMPTS's default: the spec's max_retries=3
        None,
    )
    assert doomed_done.error is not None
    assert doomed_done.error.code == "SIMULATED_FAILURE"
    # Each attempt in the timeline, in order, with the outcome it ended with.
    assert [(a.number, a.outcome) for a in retried_done.attempt_log] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "completed"),
    ]
    assert [(a.outcome, a.error_code) for a in doomed_done.attempt_log] == [
        ("retrying", "SIMULATED_FAILURE"),
        ("retrying", "SIMULATED_FAILURE"),
        ("retrying", "SIMULATED_FAILURE"),
        ("failed", "SIMULATED_FAILURE"),
    ]


@pytest.mark.timeout(90)
def test_a_job_whose_worker_was_lost_runs_again_once_or_fails_worker_lost(
    platform: tuple[str, bootstrap.Container],
) -> None:
    """The same lost-worker rule on every backend: a delivery of a job still `running`
    under a worker whose heartbeat is long stale takes it over (attempt 2), or fails it
    `WORKER_LOST` when its attempts are spent."""
    backend, container = platform
    deps = container.deps
    stale = utcnow() - timedelta(minutes=5)

    def lost(max_attempts: int) -> ReportJob:
        job = ReportJob.new(
            report_type=ReportType.DUMMY,
            params=parse_params(ReportType.DUMMY, {"seed": 11}),
            max_attempts=max_attempts,
            now=stale,
        ).with_backend(Backend(backend))
        deps.repo.add(job)
        running = deps.repo.transition(
            job.id, JobStatus.RUNNING, now=stale, worker=f"{backend}@gone:1"
        )
        assert running is not None
        deps.dispatcher.dispatch(running)
        return running

    again, spent = lost(max_attempts=3), lost(max_attempts=1)
    done = wait_for(deps.repo, again.id, timeout=30)
    assert (done.status, done.attempts, done.error) == (JobStatus.COMPLETED, 2, None)
    assert done.worker != f"{backend}@gone:1"
    assert done.artifact is not None
    gone, taken_over = done.attempt_log
    assert (gone.worker, gone.outcome) == (f"{backend}@gone:1", LOST)
    assert (taken_over.worker, taken_over.outcome) == (done.worker, "completed")
    failed = wait_for(deps.repo, spent.id, timeout=30)
    assert (failed.status, failed.attempts, failed.artifact) == (JobStatus.FAILED, 1, None)
    assert failed.error is not None
    assert failed.error.code == WORKER_LOST


@pytest.mark.timeout(90)
def test_a_delivery_while_the_ledger_is_down_waits_for_it_and_runs_once(
    platform: tuple[str, bootstrap.Container], log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same deferral on every backend: a job delivered while PostgreSQL refuses the
    ledger's connections is delivered again (Celery's countdown, RQ's and sync's wait in
    place, the inline timer, the asyncio task's sleep) until the ledger answers, then runs
    once, its attempts untouched. The dispatch runs in a thread of its own: on sync it
    returns only once the job ran, after the outage this thread ends."""
    _, container = platform
    deps = container.deps
    job = _committed(platform)  # then sent while the ledger is down
    caplog.handler.setFormatter(TextFormatter())  # the inline pool's lines, with their job id
    sender = threading.Thread(target=deps.dispatcher.dispatch, args=(job,))
    with ledger_refused(container.settings.ledger.database_url), caplog.at_level(logging.WARNING):
        sender.start()
        time.sleep(4)
        still_down = utcnow()
    sender.join(60)
    done = wait_for(deps.repo, job.id, timeout=60)
    assert (done.status, done.attempts, done.error) == (JobStatus.COMPLETED, 1, None)
    assert done.started_at is not None
    assert done.started_at > still_down  # claimed only once the ledger answered
    steps = _deferred_steps(log_dir, caplog, job)
    assert "render" in steps, "no delivery met the outage: the test proved nothing"


def _committed(platform: tuple[str, bootstrap.Container], **fields: Any) -> ReportJob:
    """A dummy job on the platform's backend, committed ``queued`` and not yet sent."""
    now = utcnow()
    job = ReportJob.new(
        report_type=ReportType.DUMMY,
        params=parse_params(ReportType.DUMMY, {"seed": 17}),
        max_attempts=3,
        now=now,
        **fields,
    ).with_backend(Backend(platform[0]))
    job = enter(job, JobStatus.QUEUED, now=now)
    platform[1].deps.repo.add(job)
    return job


def _through_an_outage(
    platform: tuple[str, bootstrap.Container],
    caplog: pytest.LogCaptureFixture,
    gate: Gate,
    **fields: Any,
) -> ReportJob:
    """Send a job from a thread of its own (sync runs it there); when a write of it waits
    at ``gate``, the ledger fails for 2 s, that write first. Returns once the thread ends."""
    caplog.handler.setFormatter(TextFormatter())  # the in-process lines, with their job id
    with gate, caplog.at_level(logging.WARNING):
        job = _committed(platform, **fields)
        sender = threading.Thread(target=platform[1].deps.dispatcher.dispatch, args=(job,))
        sender.start()
        gate.wait_held(timeout=30)
        with gate.fail():
            time.sleep(2)
    sender.join(60)
    return job


def _deferred_steps(log_dir: Path, caplog: pytest.LogCaptureFixture, job: ReportJob) -> set[str]:
    """The steps whose delivery met the outage, from every process's log."""
    text = "".join(p.read_text(errors="replace") for p in log_dir.glob("*.log")) + caplog.text
    return {
        line.split("step=")[1].split()[0]
        for line in text.splitlines()
        if "report_job.step.deferred" in line and str(job.id) in line
    }


@pytest.mark.timeout(90)
def test_packaging_that_meets_the_ledgers_outage_completes_once(
    platform: tuple[str, bootstrap.Container],
    receiver: CallbackReceiver,
    log_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same answer on every backend to a follow-up step's fault: the package's record
    waits at a gate until PostgreSQL is made to refuse the ledger, so that write fails
    mid-step; once the ledger is back, the documents step is delivered again (Celery's
    countdown, RQ's scheduled retry, the in-process timer or sleep) and completes once,
    and the callback that follows goes out once. The render's attempt is untouched."""
    _, container = platform
    gate = Gate(
        container.settings.ledger.database_url,
        "UPDATE ON report_jobs",
        "OLD.document_sha256 IS NULL AND NEW.document_sha256 IS NOT NULL",
    )
    job = _through_an_outage(platform, caplog, gate, callback_url=receiver.url)
    done = wait_for(container.deps.repo, job.id, lambda j: j.notification is not None, timeout=60)
    assert done.document is not None
    assert done.artifact is not None
    with zipfile.ZipFile(container.deps.store.local_path(done.document)) as package:
        assert package.namelist() == [done.artifact.filename, "metadata.json"]
    assert (done.status, done.attempts, done.error) == (JobStatus.COMPLETED, 1, None)
    assert [(a.number, a.outcome, a.error_code) for a in done.attempt_log] == [
        (1, "completed", None)
    ]
    assert done.notification is not None
    assert (done.notification.status.value, done.notification.attempts) == ("sent", 1)
    assert len(receiver.for_job(job.id)) == 1
    # in process, the redelivery starts the row over: the render is skipped by its claim
    assert "document" in _deferred_steps(log_dir, caplog, job) <= {"render", "document"}


@pytest.mark.timeout(90)
def test_notification_that_meets_the_ledgers_outage_emails_each_recipient_once(
    platform: tuple[str, bootstrap.Container],
    smtp_server: SmtpServer,
    log_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As above for the notify step: its first write (the recipients' rows) waits at the
    gate and fails with the ledger; delivered again once the ledger is back, the step
    emails each recipient once and records it: one attempt each, sent."""
    _, container = platform
    recipients = ("claims@example.com", "audit@example.com")
    gate = Gate(container.settings.ledger.database_url, "INSERT ON email_deliveries", "true")
    job = _through_an_outage(platform, caplog, gate, recipients=recipients)
    assert container.deps.mail is not None
    deliveries = container.deps.mail.deliveries

    def all_sent() -> bool:
        rows = deliveries.for_job(job.id)
        return len(rows) == 2 and all(r.status.value == "sent" for r in rows)

    wait_until(all_sent, timeout=60)
    received = smtp_server.wait_for_job(job.id, count=2)
    time.sleep(1)  # a duplicate would follow within the step's own delivery
    assert sorted(m.recipients[0] for m in smtp_server.for_job(job.id)) == sorted(recipients)
    assert len(received) == 2
    assert [(r.attempts, r.status.value) for r in deliveries.for_job(job.id)] == [(1, "sent")] * 2
    done = container.deps.repo.get(job.id)
    assert done is not None
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 1)
    assert [(a.number, a.outcome) for a in done.attempt_log] == [(1, "completed")]
    assert "notify" in _deferred_steps(log_dir, caplog, job) <= {"render", "notify"}


def test_worker_fixtures_are_real_processes(
    celery_session_worker: WorkerProcess, rq_session_worker: WorkerProcess
) -> None:
    for worker in (celery_session_worker, rq_session_worker):
        assert worker.process is not None
        assert worker.process.poll() is None
    assert "prefork" in celery_session_worker.logs()
