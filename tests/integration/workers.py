"""Real worker processes for integration tests, and helpers to drive jobs through them.

Workers are started through the project's own CLIs (``celery_manager.py worker``,
``manage.py rq-worker``), once per session (RabbitMQ: once per module), on Redis DB
``REDIS_DB`` with a queue prefix of their own, so that nothing collides with another
run or with a developer's workers. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import redis
from app import bootstrap
from app.bootstrap import celery_app
from app.core.celery_app import queue_name
from app.core.config import Settings
from app.db.migrations import upgrade
from app.domain.jobs import ReportJob
from app.domain.ledger import JobRepository
from app.domain.queues import Queue
from app.domain.states import JobStatus
from kombu import Connection
from kombu import Queue as KombuQueue

from tests.conftest import fresh_pg_database

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once
CALLBACK_SECRET = "test-callback-secret"


def worker_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment for a worker or CLI process: fast progress and retries, text logs."""
    env = {k: v for k, v in os.environ.items() if k.isupper() and k not in _SETTING_NAMES}
    return {**env, "PYTHONUNBUFFERED": "1", **base, **extra}


_SETTING_NAMES = {name.upper() for name in Settings.fields()}


def base_env(database_url: str, data_dir: Path, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "QUEUE_PREFIX": prefix,
        "ENVIRONMENT": "test",
        "PROGRESS_INTERVAL": "0.25",
        "RETRY_BACKOFF_BASE": "0.2",
        "RETRY_BACKOFF_MAX": "2",
        "AVAILABILITY_CACHE_SECONDS": "1",
        "CANCEL_GRACE_SECONDS": "1",
        "RATE_LIMIT_REQUESTS": "1000000",  # every API route is limited; tests poll in loops
        "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "CALLBACK_SECRET": CALLBACK_SECRET,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
    }


def settings_from(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings as a worker with ``env`` would read them, plus ``overrides``."""
    values: dict[str, Any] = {k.lower(): v for k, v in env.items() if k in _SETTING_NAMES}
    values["callback_allowed_hosts"] = env.get("CALLBACK_ALLOWED_HOSTS", "")
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class WorkerProcess:
    """A worker started from a CLI command, its log, and a clean stop."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready: str, timeout: float = 40) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *self.command],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.logs()}")
            if ready in self.logs():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL the whole process group if it lingers."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode


@contextmanager
def running_worker(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, ready: str
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(name, command, env, log_dir / f"{name}.log").start(ready)
    try:
        yield worker
    finally:
        worker.stop()


def celery_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    queues: str = "all",
    concurrency: int = 2,
    extra: tuple[str, ...] = (),
) -> Iterator[WorkerProcess]:
    """``celery_manager.py worker QUEUES N``: a prefork Celery worker."""
    node = f"{env['QUEUE_PREFIX']}{secrets.token_hex(2)}@%h"
    with running_worker(
        f"celery-{node.split('@')[0]}",
        ["celery_manager.py", "worker", queues, str(concurrency), "--name", node, *extra],
        env,
        log_dir,
        ready=" ready.",
    ) as worker:
        yield worker


def rq_worker(env: dict[str, str], log_dir: Path, *queues: str) -> Iterator[WorkerProcess]:
    """``manage.py rq-worker QUEUES``: a forking RQ worker with its scheduler."""
    with running_worker(
        f"rq-{env['QUEUE_PREFIX']}{secrets.token_hex(2)}",
        ["manage.py", "rq-worker", *queues],
        env,
        log_dir,
        ready="Listening on",
    ) as worker:
        yield worker


@contextmanager
def tarpit() -> Iterator[str]:
    """A broker URL that accepts connections and never answers (a hung broker)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


def delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# --------------------------------------------------------------------------- jobs


def wait_for(
    repo: JobRepository,
    job_id: UUID,
    done: Callable[[ReportJob], bool] = lambda j: j.status.terminal,
    timeout: float = 30,
) -> ReportJob:
    """Poll the ledger until ``done(job)``; fail with the last row seen."""
    deadline = time.monotonic() + timeout
    job = repo.get(job_id)
    while time.monotonic() < deadline:
        job = repo.get(job_id)
        if job is not None and done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not done after {timeout}s: {job}")


def running_with_progress(job: ReportJob) -> bool:
    return job.status is JobStatus.RUNNING and job.progress > 0


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(container: bootstrap.Container, job_id: UUID) -> list[Path]:
    """Temp or published files of a job still on disk."""
    root = container.settings.artifacts
    return [*(root / ".tmp").glob(f"{job_id}*"), *(root / str(job_id)).glob("*")]


# --------------------------------------------------------------------------- callbacks


@dataclass
class CallbackReceiver:
    """A local HTTP endpoint recording callbacks; answers ``fail_first`` 503s first."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], dict[str, Any], bytes]] = field(default_factory=list)
    server: HTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/hooks/report"

    def start(self) -> CallbackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append((headers, json.loads(body), body))
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def for_job(self, job_id: UUID) -> list[tuple[dict[str, str], dict[str, Any], bytes]]:
        return [r for r in self.received if r[1]["job"]["id"] == str(job_id)]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --------------------------------------------------------------------------- fault injection


def start_celery_worker(
    env: dict[str, str], log_dir: Path, *, queues: str = "all", concurrency: int = 1
) -> WorkerProcess:
    """A started ``celery_manager.py worker``; the caller signals and stops it."""
    node = f"{env['QUEUE_PREFIX']}{secrets.token_hex(2)}@%h"
    name = f"celery-{node.split('@')[0]}"
    command = ["celery_manager.py", "worker", queues, str(concurrency), "--name", node]
    return WorkerProcess(name, command, env, log_dir / f"{name}.log").start(" ready.")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the repository root (a CLI run to its end), output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_rq_worker(env: dict[str, str], log_dir: Path, *queues: str) -> WorkerProcess:
    """A started ``manage.py rq-worker``; the caller signals and stops it."""
    name = f"rq-{env['QUEUE_PREFIX']}{secrets.token_hex(2)}"
    command = ["manage.py", "rq-worker", *(queues or ("all",))]
    return WorkerProcess(name, command, env, log_dir / f"{name}.log").start("Listening on")


def event_lines(text: str, event: str, job_id: UUID | str) -> list[str]:
    """Log lines (text format) of the dotted ``event`` about ``job_id``."""
    return [
        line
        for line in text.splitlines()
        if f" {event} " in f"{line} " and f"job_id={job_id}" in line
    ]


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> float:
    """Poll ``predicate()`` until true; returns the seconds it took (fails after ``timeout``)."""
    assert callable(predicate)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def logged(logs: Callable[[], str], event: str, job_id: UUID | str) -> list[str]:
    """The lines of ``event`` about ``job_id`` in ``logs()``, once there is one (10 s at most).

    A worker logs an outcome just after committing it: a test that has seen the row may read
    the log a moment before the line is there.
    """
    lines: list[str] = []

    def seen() -> bool:
        lines[:] = event_lines(logs(), event, job_id)
        return bool(lines)

    wait_until(seen, 10)
    return lines


def assert_completed_once(
    job: ReportJob, artifacts: Path, *workers: WorkerProcess, attempts: int | None = None
) -> None:
    """Completed, one artifact file (the recorded one, under its attempt), one start per
    attempt and one completion in the ``workers``' logs."""
    assert job.status is JobStatus.COMPLETED, job
    assert job.artifact is not None
    assert job.artifact.key.startswith(f"{job.id}/{job.attempts}/"), job.artifact
    files = artifact_files(artifacts, job.id)
    assert files == [artifacts / job.artifact.key], files

    def logs() -> str:
        return "\n".join(w.logs() for w in workers)

    assert len(logged(logs, "report_job.completed", job.id)) == 1
    started = event_lines(logs(), "report_job.started", job.id)
    assert len(started) == job.attempts, started
    if attempts is not None:
        assert job.attempts == attempts


def artifact_files(artifacts: Path, job_id: UUID | str) -> list[Path]:
    """Every file published for a job under ``artifacts/<job_id>/``."""
    folder = artifacts / str(job_id)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def parent_pid(pid: int) -> int:
    """The parent of a live process, from ``/proc/<pid>/stat`` (the field after the state)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def rq_scheduler_pid(
    env: dict[str, str], worker: WorkerProcess, queue: str = "reports", timeout: float = 10
) -> int:
    """The pid of the RQ scheduler process holding the lock of ``queue``, as the scheduler
    registered it in Redis; fails unless it is a child of ``worker``'s main process."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    lock = f"rq:scheduler-lock:{env['QUEUE_PREFIX']}{queue}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            name = client.get(lock)
            pid = client.hget(f"rq:scheduler:{name}", "pid") if name else None
            if pid and int(pid):
                assert worker.process is not None
                assert parent_pid(int(pid)) == worker.process.pid, (pid, worker.name)
                return int(pid)
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError(f"no RQ scheduler registered for {lock} after {timeout}s")


@contextmanager
def own_ledger(work_dir: Path, name: str, **settings: str) -> Iterator[dict[str, str]]:
    """A worker environment on a PostgreSQL ledger of the test's own (every recovery and
    housekeeping slot free) with queues of its own and no metrics port; ``settings`` on top."""
    prefix = f"{name[:4]}{secrets.token_hex(3)}-"
    with fresh_pg_database(name) as url:
        upgrade(url)
        yield worker_env(base_env(url, work_dir / "data", prefix), METRICS_PORT="0", **settings)
    delete_redis_keys(prefix)


def send_task(settings: Settings, name: str) -> None:
    """Publish a task by name to the workers of ``settings``, as Beat would."""
    app = celery_app(settings)
    try:
        app.send_task(name)
    finally:
        app.close()


def pid_of(job: ReportJob) -> int:
    """The process that claimed ``job`` (its worker id ends with the pid)."""
    assert job.worker is not None
    return int(job.worker.rsplit(":", 1)[1])


@contextmanager
def on_rabbitmq(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``env`` with a RabbitMQ broker and queues of its own, deleted afterwards."""
    amqp = {**env, "CELERY_BROKER_URL": AMQP_URL, "QUEUE_PREFIX": f"a{secrets.token_hex(3)}-"}
    yield amqp
    settings = settings_from(amqp)
    with Connection(AMQP_URL, connect_timeout=5) as conn:
        for queue in Queue:
            KombuQueue(queue_name(settings.brokers, queue)).bind(conn.default_channel).delete()
