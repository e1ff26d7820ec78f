"""``kill -9`` of a worker's main process (not its pool child or work horse): every job it
held ends terminal, once, within a bounded time, and none is left ``running``.

- Celery: the prefork children die with their master (billiard ties them to it), so the
  jobs they rendered stop with a stale heartbeat, and their messages stay unacked on a
  dead connection. Beat's recovery (``system.recover_jobs``, sent here as Beat would at
  its next run once the heartbeats are stale) queues them again, and a replacement worker
  completes them at attempt 2. The job still waiting in the broker is simply taken by it.
- RQ: the work horse finishes the job it was running and records it; the jobs still in
  the queue are taken by a replacement worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from app import bootstrap
from app.domain.jobs import ReportJob, utcnow
from app.domain.queues import ReportType
from app.services.enqueue import enqueue_report
from app.services.housekeeping import RECOVER

from tests.integration.ops import wait_until
from tests.integration.workers import (
    WorkerProcess,
    assert_completed_once,
    own_ledger,
    pid_of,
    running_with_progress,
    send_task,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)

HEARTBEAT_TIMEOUT = 3.0
#: Seconds from the kill until every job is terminal (renders of 3 s, recovery included).
BOUND = 40.0


@pytest.fixture
def env(work_dir: Path) -> Iterator[dict[str, str]]:
    """A ledger of the test's own (its recovery slot is free), own queues, 3 s heartbeats."""
    with own_ledger(work_dir, "mainkill", HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT)) as env:
        yield env


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
    return False


def kill_main(worker: WorkerProcess) -> None:
    assert worker.process is not None
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def kill_group(worker: WorkerProcess) -> None:
    """Whatever the killed main left behind (a finishing work horse, RQ's scheduler)."""
    if worker.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)


def enqueue_three(container: bootstrap.Container) -> list[UUID]:
    return [
        enqueue_report(
            deps=container.deps,
            report_type=ReportType.DUMMY,
            params={"processing_time": 3, "seed": seed},
        ).job.id
        for seed in range(3)
    ]


def settle(container: bootstrap.Container, ids: list[UUID], since: float) -> list[ReportJob]:
    """Every job terminal within ``BOUND`` of the kill, and still so a moment later."""
    repo = container.deps.repo
    finals = [wait_for(repo, i, timeout=max(1.0, BOUND - (time.monotonic() - since))) for i in ids]
    time.sleep(1.5)
    assert [repo.get(i) for i in ids] == finals  # nothing ran them again
    assert not list(repo.unfinished())  # no job left running (or waiting)
    return finals


@pytest.mark.timeout(90)
def test_sigkill_of_a_celery_main_process_every_job_ends_terminal_once(
    env: dict[str, str], work_dir: Path
) -> None:
    container = bootstrap.build(settings_from(env, dispatch_backend="celery"))
    workers: list[WorkerProcess] = []
    try:
        repo = container.deps.repo
        workers.append(start_celery_worker(env, work_dir, queues="reports", concurrency=2))
        a = workers[0]
        ids = enqueue_three(container)

        def held() -> list[ReportJob]:
            return [j for i in ids if (j := repo.get(i)) and running_with_progress(j)]

        wait_until(lambda: len(held()) == 2, timeout=20)
        rendering = held()
        kill_main(a)
        killed_at = time.monotonic()
        children = [pid_of(j) for j in rendering]
        wait_until(lambda: not any(alive(p) for p in children), timeout=10)

        workers.append(start_celery_worker(env, work_dir, queues="all", concurrency=2))
        # Beat's next run once the heartbeats are stale.
        newest = max(j.updated_at for j in held() or rendering)
        stale_in = (newest + timedelta(seconds=HEARTBEAT_TIMEOUT + 0.5) - utcnow()).total_seconds()
        time.sleep(max(0.0, stale_in))
        send_task(settings_from(env), RECOVER)

        finals = settle(container, ids, killed_at)
        attempts = dict.fromkeys(ids, 1) | {j.id: 2 for j in rendering}
        for job in finals:
            assert_completed_once(
                job, container.settings.artifacts, *workers, attempts=attempts[job.id]
            )
        assert all(j.worker != r.worker for j in finals for r in rendering)
        took = time.monotonic() - killed_at
        print(f"celery: every job terminal {took:.1f}s after the kill")
    finally:
        for worker in workers:
            worker.stop()
            kill_group(worker)
        container.close()


@pytest.mark.timeout(90)
def test_sigkill_of_an_rq_main_process_every_job_ends_terminal_once(
    env: dict[str, str], work_dir: Path
) -> None:
    container = bootstrap.build(settings_from(env, dispatch_backend="rq"))
    workers: list[WorkerProcess] = []
    try:
        repo = container.deps.repo
        workers.append(start_rq_worker(env, work_dir, "reports"))
        a = workers[0]
        ids = enqueue_three(container)
        first = wait_for(repo, ids[0], running_with_progress, timeout=20)
        assert a.process is not None
        assert pid_of(first) != a.process.pid  # the work horse renders it
        kill_main(a)
        killed_at = time.monotonic()

        workers.append(start_rq_worker(env, work_dir, "reports"))
        finals = settle(container, ids, killed_at)
        for job in finals:
            assert_completed_once(job, container.settings.artifacts, *workers, attempts=1)
        took = time.monotonic() - killed_at
        print(f"rq: every job terminal {took:.1f}s after the kill")
    finally:
        for worker in workers:
            worker.stop()
            kill_group(worker)
        container.close()
