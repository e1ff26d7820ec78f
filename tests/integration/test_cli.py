"""The CLIs: every command has --help, workers started by them process real jobs, Beat and
Flower start, ``status`` tells who is alive and fails when nobody answers."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from app import bootstrap
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report

from tests.e2e.server import free_port
from tests.integration.workers import (
    DEAD_URL,
    ROOT,
    WorkerProcess,
    delete_redis_keys,
    running_worker,
    settings_from,
    wait_for,
)

MANAGE = ["serve", "migrate", "celery-worker", "celery-beat", "celery-flower", "celery-status"]
MANAGER = ["worker", "beat", "flower", "status"]


def run(
    script: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("script", "command"),
    [("manage.py", c) for c in [*MANAGE, "rq-worker"]]
    + [("celery_manager.py", c) for c in MANAGER],
)
def test_every_command_has_help(script: str, command: str, backend_env: dict[str, str]) -> None:
    result = run(script, command, "--help", env=backend_env)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_status_fails_fast_when_nothing_answers(backend_env: dict[str, str]) -> None:
    env = {**backend_env, "CELERY_BROKER_URL": DEAD_URL, "REDIS_URL": DEAD_URL}
    started = time.monotonic()
    result = run("celery_manager.py", "status", env=env, timeout=30)
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stdout
    assert result.stdout.count("unreachable") == 2
    assert "NO WORKER ANSWERED" in result.stdout


def test_status_lists_celery_and_rq_workers_and_queues(
    backend_env: dict[str, str],
    celery_session_worker: WorkerProcess,
    rq_session_worker: WorkerProcess,
) -> None:
    for script, command in (("celery_manager.py", "status"), ("manage.py", "celery-status")):
        result = run(script, command, env=backend_env)
        assert result.returncode == 0, result.stdout + result.stderr
        prefix = backend_env["QUEUE_PREFIX"]
        assert f"queues={prefix}celery,{prefix}documents" in result.stdout
        assert re.search(r"active=\d+ reserved=\d+", result.stdout)
        assert re.search(rf"queue {prefix}reports: depth=\d+ workers=1", result.stdout)


def test_worker_refuses_to_start_when_visibility_timeout_is_too_short(
    backend_env: dict[str, str],
) -> None:
    env = {**backend_env, "CELERY_VISIBILITY_TIMEOUT": "600"}
    result = run("celery_manager.py", "worker", "reports", "1", env=env)
    assert result.returncode == 2
    assert "MISCONFIGURED: CELERY_VISIBILITY_TIMEOUT=600s must exceed" in result.stderr


def test_unknown_queue_is_refused(backend_env: dict[str, str]) -> None:
    result = run("manage.py", "celery-worker", "invoices", "1", env=backend_env)
    assert result.returncode == 2
    assert "Unknown queue invoices" in result.stderr


@pytest.mark.timeout(90)
def test_manage_celery_worker_processes_real_jobs(
    backend_env: dict[str, str], log_dir: Path
) -> None:
    env = {**backend_env, "QUEUE_PREFIX": f"c{secrets.token_hex(3)}-"}
    container = bootstrap.build(settings_from(env, dispatch_backend="celery"))
    try:
        job = enqueue_report(deps=container.deps, report_type=ReportType.DUMMY, params={}).job
        with running_worker(
            "manage-celery-worker",
            ["manage.py", "celery-worker", "reports", "1", "--without-mingle"],
            env,
            log_dir,
            ready=" ready.",
        ) as worker:
            assert wait_for(container.deps.repo, job.id, timeout=30).status is JobStatus.COMPLETED
            assert "concurrency: 1 (prefork)" in worker.logs()
        assert worker.process is not None
        assert worker.process.returncode == 0
    finally:
        container.close()
        delete_redis_keys(env["QUEUE_PREFIX"])


def test_beat_and_flower_start(backend_env: dict[str, str], log_dir: Path) -> None:
    with running_worker(
        "beat", ["celery_manager.py", "beat"], backend_env, log_dir, ready="beat: Starting"
    ):
        pass
    port = free_port()
    with running_worker(
        "flower",
        ["manage.py", "celery-flower", str(port)],
        backend_env,
        log_dir,
        ready="Visit me at",
    ):
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
