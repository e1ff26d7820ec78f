"""JSON only on every queue: a pickled message is refused, never executed, and the worker
goes on with the next job."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from app.bootstrap import celery_app
from app.core.celery_app import RUN_REPORT, queue_name
from app.dispatch.rq_dispatcher import redis_client
from app.domain.queues import Queue, ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from rq import Queue as RqQueue

from tests.integration.workers import WorkerProcess, settings_from, wait_for


class Payload:
    """Unpickling this creates ``path``: the proof a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.path),))


def still_works(containers: dict, backend: str) -> None:  # type: ignore[type-arg]
    deps = containers[backend].deps
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    assert wait_for(deps.repo, job.id, timeout=30).status is JobStatus.COMPLETED


@pytest.mark.timeout(60)
def test_a_pickled_celery_message_is_refused(
    backend_env: dict[str, str],
    celery_session_worker: WorkerProcess,
    containers: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    marker = tmp_path / "celery-unpickled"
    settings = settings_from(backend_env)
    app = celery_app(settings)
    app.conf.accept_content = ["json", "pickle"]  # a rogue producer, not the platform
    app.send_task(
        RUN_REPORT,
        args=[Payload(marker)],
        queue=queue_name(settings.brokers, Queue.REPORTS),
        serializer="pickle",
    )
    deadline = time.monotonic() + 20
    while "disallowed" not in celery_session_worker.logs().lower():
        assert time.monotonic() < deadline, celery_session_worker.logs()[-3000:]
        time.sleep(0.1)
    assert not marker.exists()
    assert celery_session_worker.process is not None
    assert celery_session_worker.process.poll() is None
    still_works(containers, "celery")


@pytest.mark.timeout(60)
def test_a_pickled_rq_job_is_refused(
    backend_env: dict[str, str],
    rq_session_worker: WorkerProcess,
    containers: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    marker = tmp_path / "rq-unpickled"
    ran = tmp_path / "rq-ran"
    settings = settings_from(backend_env)
    connection = redis_client(settings.brokers.redis_url, 2.0)
    rogue = RqQueue(f"{settings.brokers.queue_prefix}{Queue.REPORTS.value}", connection=connection)
    job = rogue.enqueue("os.makedirs", str(ran), meta={"payload": Payload(marker)})
    deadline = time.monotonic() + 20
    while f"DeserializationError\n queue={rogue.name} job_id={job.id}" not in (
        rq_session_worker.logs()
    ):
        assert time.monotonic() < deadline, rq_session_worker.logs()[-3000:]
        time.sleep(0.1)
    assert job.get_status(refresh=True).value == "failed"
    assert not ran.exists()
    assert not marker.exists()
    assert rq_session_worker.process is not None
    assert rq_session_worker.process.poll() is None
    still_works(containers, "rq")
