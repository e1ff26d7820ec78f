"""Session fixtures for the backend tests: real Celery and RQ workers, started once."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from app import bootstrap

from tests.integration.s3 import MotoServer
from tests.integration.workers import (
    CallbackReceiver,
    WorkerProcess,
    base_env,
    celery_worker,
    delete_redis_keys,
    own_ledger,
    rq_worker,
    settings_from,
    worker_env,
)
from tests.smtp import SmtpServer


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    """Worker data and logs, outside pytest's rotated basetemp: concurrent pytest runs on
    this machine prune old basetemps, which must not pull the floor from live workers."""
    path = Path(tempfile.mkdtemp(prefix="report-backends-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def work_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A test's own data and logs, outside pytest's basetemp too (``KEEP_FAULT_LOGS=1``
    keeps them for a post-mortem)."""
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-"))
    yield path
    if not os.environ.get("KEEP_FAULT_LOGS"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def log_dir(session_dir: Path) -> Path:
    (session_dir / "logs").mkdir()
    return session_dir / "logs"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """The session's SMTP server (aiosmtpd on loopback): the workers' mail goes there."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def backend_env(
    pg_url: str, session_dir: Path, smtp_server: SmtpServer
) -> Iterator[dict[str, str]]:
    """Environment shared by the session's workers and containers (own queue prefix)."""
    prefix = f"t{secrets.token_hex(3)}-"
    mail = {
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_TIMEOUT": "5",
    }
    env = worker_env(base_env(pg_url, session_dir / "data", prefix), **mail)
    yield env
    delete_redis_keys(prefix)


@pytest.fixture(scope="session")
def celery_session_worker(backend_env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    """A prefork Celery worker on the Redis broker, consuming every queue (2 processes)."""
    yield from celery_worker(backend_env, log_dir)


@pytest.fixture(scope="session")
def rq_session_worker(backend_env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    """An RQ worker listening on every queue."""
    yield from rq_worker(backend_env, log_dir)


@pytest.fixture(scope="session")
def containers(backend_env: dict[str, str]) -> Iterator[dict[str, bootstrap.Container]]:
    """One API-side container per forced backend, built on first use."""
    built: dict[str, bootstrap.Container] = {}

    class Lazy(dict[str, bootstrap.Container]):
        def __missing__(self, backend: str) -> bootstrap.Container:
            container = bootstrap.build(settings_from(backend_env, dispatch_backend=backend))
            built[backend] = self[backend] = container
            return container

    yield Lazy()
    for container in built.values():
        container.close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def own(work_dir: Path) -> Iterator[tuple[dict[str, str], bootstrap.Container]]:
    """A ledger of the test's own (every Beat slot is free), own queues, and an API-side
    container sending to Celery."""
    with own_ledger(work_dir, "own") as env:
        built = bootstrap.build(settings_from(env, dispatch_backend="celery"))
        try:
            yield env, built
        finally:
            built.close()


@pytest.fixture(scope="session")
def moto_server(session_dir: Path) -> Iterator[MotoServer]:
    """moto's standalone S3 server, a real subprocess on loopback, once per session."""
    server = MotoServer(session_dir / "moto.log").start()
    yield server
    server.stop()
