"""A real Flower started by the CLI: basic auth from the environment, a live worker listed,
the tasks it runs shown (Flower turns the workers' task events on; they are off by
default), and no start at all without credentials in production."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from app.bootstrap import celery_app
from app.core.celery_app import PING

from tests.e2e.server import free_port
from tests.integration.workers import WorkerProcess, run_cli, running_worker, settings_from

pytestmark = pytest.mark.timeout(90)

AUTH = ("ops", "s3cret-pass")


def test_flower_needs_credentials_and_lists_the_live_worker(
    backend_env: dict[str, str], celery_session_worker: WorkerProcess, log_dir: Path
) -> None:
    port = free_port()
    env = {**backend_env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    with running_worker(
        "flower-auth", ["celery_manager.py", "flower", str(port)], env, log_dir, "Visit me at"
    ) as flower:
        base = f"http://127.0.0.1:{port}"
        _wait_answering(base)
        assert httpx.get(f"{base}/", timeout=5).status_code == 401
        assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert httpx.get(f"{base}/", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{base}/", auth=AUTH, timeout=5, follow_redirects=True).status_code == 200
        node = _node_name(celery_session_worker)
        deadline = time.monotonic() + 30
        workers: dict[str, object] = {}
        while node not in workers and time.monotonic() < deadline:
            response = httpx.get(f"{base}/api/workers?refresh=1", auth=AUTH, timeout=15)
            assert response.status_code == 200
            workers = response.json()
            time.sleep(0.3)
        assert node in workers, (list(workers), flower.logs()[-2000:])
        # Workers send no task events of their own: Flower enables them (every few seconds).
        celery = celery_app(settings_from(backend_env))
        deadline = time.monotonic() + 30
        seen: dict[str, object] = {}
        while not seen and time.monotonic() < deadline:
            sent = celery.send_task(PING).id
            time.sleep(1)
            tasks = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=15).json()
            seen = {i: t for i, t in tasks.items() if i == sent}
        assert seen, flower.logs()[-2000:]
        assert "s3cret-pass" not in " ".join(flower.command)  # never on a command line


def test_flower_refuses_to_start_without_auth_in_production(backend_env: dict[str, str]) -> None:
    env = {**backend_env, "ENVIRONMENT": "production", "FLOWER_BASIC_AUTH": ""}
    for script, command in (("celery_manager.py", "flower"), ("manage.py", "celery-flower")):
        result = run_cli([script, command, str(free_port())], env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "MISCONFIGURED: Flower refuses to start without FLOWER_BASIC_AUTH" in result.stderr


def test_flower_refuses_malformed_credentials(backend_env: dict[str, str]) -> None:
    env = {**backend_env, "FLOWER_BASIC_AUTH": "just-a-user"}
    result = run_cli(["celery_manager.py", "flower", str(free_port())], env)
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr


def _wait_answering(base: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/healthcheck", timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _node_name(worker: WorkerProcess) -> str:
    """``--name prefix@%h`` as Celery expands it (the host name of this machine)."""
    name = worker.command[worker.command.index("--name") + 1]
    return name.replace("%h", socket.gethostname())
