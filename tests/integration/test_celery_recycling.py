"""A Celery worker replaces its pool children (``CELERY_MAX_TASKS_PER_CHILD``) without
losing a job, and its main process is readied before it forks them (``worker_init``)."""

from __future__ import annotations

import json
from pathlib import Path

from app import bootstrap
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report

from tests.integration.workers import (
    own_ledger,
    pid_of,
    run_cli,
    settings_from,
    start_celery_worker,
    wait_for,
)

JOBS = 6
PER_CHILD = 2


def test_recycled_children_take_every_job_once(work_dir: Path) -> None:
    """One pool process, replaced after every 2 tasks: 6 jobs, each completed at its first
    attempt by a child (never the main process), 3 children in turn."""
    with own_ledger(work_dir, "recycle", CELERY_MAX_TASKS_PER_CHILD=str(PER_CHILD)) as env:
        container = bootstrap.build(settings_from(env, dispatch_backend="celery"))
        try:
            deps = container.deps
            ids = [
                enqueue_report(
                    deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 0}
                ).job.id
                for _ in range(JOBS)
            ]
            worker = start_celery_worker(env, work_dir, concurrency=1)
            try:
                jobs = [wait_for(deps.repo, job_id, timeout=60) for job_id in ids]
            finally:
                worker.stop()
        finally:
            container.close()
    assert worker.process is not None
    assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.COMPLETED, 1)] * JOBS
    pids = {pid_of(j) for j in jobs}
    assert worker.process.pid not in pids
    assert len(pids) == JOBS // PER_CHILD, pids


READIED = """
import gc, json, sys
sys.path.insert(0, "backend")
from app.workers import celery_tasks
celery_tasks._prepare()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "cffi": "cffi" in sys.modules,
    "pycparser": "pycparser" in sys.modules,
}))
"""


def test_worker_main_process_is_readied_before_it_forks(work_dir: Path) -> None:
    """After ``worker_init``, start-up's heap is frozen (the pool's ``gc.collect()`` before
    each fork skips it) and cffi's C parser is loaded (billiard's parent-death signal in
    each child does not import it again)."""
    with own_ledger(work_dir, "readied") as env:
        done = run_cli(["-c", READIED], env)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["frozen"] > 10_000, state
    assert state["cffi"], "cffi is installed (cryptography needs it): billiard uses it"
    assert state["pycparser"], state
