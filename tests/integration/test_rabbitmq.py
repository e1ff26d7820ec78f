"""RabbitMQ restarted while a Celery worker drains a load: nothing lost, nothing run twice.

A prefork worker (2 processes) on RabbitMQ drains 120 short jobs; once some are done the
broker's application is stopped and started again (``rabbitmqctl stop_app`` /
``start_app``: the node keeps its durable queues and persistent messages, every connection
is cut). What must hold, and why:

- the worker reconnects by itself (``broker_connection_max_retries``, kombu's
  ``ensure_connection`` backoff: 2 s, 4 s, ...) and takes the rest of the queue;
- the renders running at the cut finish (``worker_cancel_long_running_tasks_on_connection_loss``
  is off), but their acks are lost with the channel, so RabbitMQ delivers those messages
  again (``acks_late``): the ledger's claim refuses the second run — one start, one
  artifact, ``attempts=1`` per job. The first job renders for ``LONG`` seconds and the cut
  comes while it runs, so at least that redelivery happens and is refused; at most
  ``prefetch`` (concurrency 2 x multiplier 1) messages are unacked at the cut, so at most
  two jobs are refused, each one received before the connection was lost;
- an enqueue while the broker is down answers within 1.5 s with ``BACKEND_UNAVAILABLE``
  (Celery is forced here: no other backend) and leaves no row waiting (README, "broker
  stopped at enqueue").

The outage is kept short (a few seconds): other test sessions may share this RabbitMQ.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from app import bootstrap
from app.domain.errors import Unavailable
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from kombu import Connection
from sqlalchemy import bindparam, text

from tests.integration.ops import wait_until
from tests.integration.workers import (
    AMQP_URL,
    artifact_files,
    event_lines,
    on_rabbitmq,
    settings_from,
    start_celery_worker,
)

JOBS = 120
#: The first job's render (seconds): it outlasts the drain of 10 short jobs and the cut.
LONG = 6
#: Unacked messages a worker holds (concurrency 2 x ``worker_prefetch_multiplier`` 1).
PREFETCH = 2


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=30)


def amqp_answers() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=1) as conn:
            conn.connect()
            return True
    except Exception:
        return False


@pytest.fixture
def amqp_env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with on_rabbitmq(backend_env) as env:
        yield env
        wait_until(amqp_answers, 30, interval=0.5)  # the test restarted it: back before cleanup


def statuses(container: bootstrap.Container, since: datetime) -> Counter[str]:
    """Status counts of the rows created since ``since`` (this test's own)."""
    query = text(
        "SELECT status, count(*) FROM report_jobs WHERE created_at >= :since GROUP BY status"
    )
    with container.engine.connect() as conn:
        return Counter({row[0]: row[1] for row in conn.execute(query, {"since": since})})


@pytest.mark.timeout(180)
def test_rabbitmq_restart_mid_drain_loses_nothing_and_runs_nothing_twice(
    amqp_env: dict[str, str], work_dir: Path
) -> None:
    """Nothing lost, nothing run twice, and the claim did refuse redeliveries: the long
    render's message (unacked at the cut, as the ledger shows it running after the cut) is
    delivered again and refused; no more jobs than the worker's prefetch window (2) are, and
    only jobs whose message the worker had received before it lost the broker."""
    since = datetime.now(UTC)
    container = bootstrap.build(settings_from(amqp_env, dispatch_backend="celery"))
    deps = container.deps
    worker = start_celery_worker(amqp_env, work_dir, queues="reports", concurrency=2)
    try:
        ids = [
            enqueue_report(
                deps=deps,
                report_type=ReportType.DUMMY,
                params={"processing_time": LONG if i == 0 else 0.1, "seed": i},
            ).job.id
            for i in range(JOBS)
        ]
        long = ids[0]

        def long_renders() -> bool:
            job = deps.repo.get(long)
            return job is not None and job.status is JobStatus.RUNNING

        wait_until(
            lambda: statuses(container, since)["completed"] >= 10 and long_renders(),
            30,
            interval=0.1,
        )

        cut = time.monotonic()
        rabbitmqctl("stop_app")
        try:
            assert not amqp_answers()
            assert long_renders()  # the cut came mid-render: its ack cannot have been sent
            before = statuses(container, since)
            refused_in = time.monotonic()
            with pytest.raises(Unavailable) as refused:
                enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": JOBS})
            refused_in = time.monotonic() - refused_in
        finally:
            rabbitmqctl("start_app")
        outage = time.monotonic() - cut
        assert outage < 15, f"outage {outage:.1f}s"
        assert refused_in < 1.5, refused_in
        assert refused.value.code == "BACKEND_UNAVAILABLE"
        assert before["completed"] < JOBS - 20, before  # the cut came mid-drain

        def drained() -> bool:
            return statuses(container, since)["completed"] == JOBS

        took = wait_until(drained, 60, interval=0.2)
        time.sleep(1.0)  # a redelivered message has the time to show a second start
        log = worker.logs()
    finally:
        worker.stop()
        final = statuses(container, since)
        rows = _rows(container, ids)
        container.close()

    # Nothing lost: every job completed. The enqueue refused during the outage wrote
    # no row or a failed one (the router may learn of the outage before or at publish);
    # none is left waiting.
    assert final["completed"] == JOBS, final
    assert set(final) <= {"completed", "failed"}, final
    assert final["failed"] <= 1, final
    # Nothing run twice: one attempt, one claim, one artifact per job.
    assert len(rows) == JOBS
    assert set(rows.values()) == {1}, Counter(rows.values())
    starts = Counter(
        job_id for job_id in ids for _ in event_lines(log, "report_job.started", job_id)
    )
    assert len(starts) == JOBS
    assert set(starts.values()) == {1}, starts.most_common(3)
    artifacts = container.settings.artifacts
    assert all(len(artifact_files(artifacts, job_id)) == 1 for job_id in ids)
    # The worker did lose its broker and come back (the cut was real), within bounds.
    assert "Connection to broker lost" in log, log[-3000:]
    assert took < 60
    # The redeliveries of messages unacked at the cut were refused by the claim: the long
    # render's for sure, at most PREFETCH jobs, each one received before the loss.
    lost_at = log.index("Connection to broker lost")
    refused_jobs = {j: event_lines(log, "report_job.run.skipped", j) for j in ids}
    refused_jobs = {j: lines for j, lines in refused_jobs.items() if lines}
    assert long in refused_jobs, log[lost_at - 3000 : lost_at + 6000]
    assert len(refused_jobs) <= PREFETCH, refused_jobs
    for job_id, lines in refused_jobs.items():
        assert log.index(f"reports.run_report[{job_id}] received") < lost_at, job_id
        assert all(re.search(r" status=(running|completed) ", line) for line in lines), lines
    redelivered = len(re.findall(r"succeeded in [^\n]*'skipped'", log))
    print(f"outage {outage:.1f}s, enqueue refused in {refused_in:.2f}s, drained {took:.1f}s later;")
    print(f"{redelivered} redelivered messages refused by the claim, jobs {list(refused_jobs)}")


def _rows(container: bootstrap.Container, ids: list[UUID]) -> dict[UUID, int]:
    query = text("SELECT id, attempts FROM report_jobs WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    with container.engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(query, {"ids": ids})}
