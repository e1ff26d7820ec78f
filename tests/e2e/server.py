"""A real API process for end-to-end tests, started the way `make run` starts it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self, *, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client of this server carrying ``api_key`` (default: the operator key)."""
        key = api_key or self.api_key
        headers = {"X-API-Key": key} if key else {}
        kwargs.setdefault("timeout", 10)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def create_key(self, owner: str, role: str = "submitter") -> str:
        """A new API key from `manage.py api-key create` (its last line)."""
        return create_key(self.env, owner, role)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def _env(data_dir: Path, database_url: str, port: int, extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ENVIRONMENT": "test",
        "DISPATCH_BACKEND": "inline",
        "INLINE_WORKERS": "2",
        "PROGRESS_INTERVAL": "0.25",
        "RETRY_BACKOFF_BASE": "0.2",
        "LOG_FORMAT": "json",
        "RATE_LIMIT_REQUESTS": "1000000",
        **extra,
    }


def create_key(env: dict[str, str], owner: str, role: str) -> str:
    """A new API key from `manage.py api-key create` (its last line)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "api-key", "create", "--owner", owner, "--role", role],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def start(data_dir: Path, database_url: str, **extra: str) -> LiveServer:
    """Migrate, then start `manage.py serve` and wait until it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _env(data_dir, database_url, port, extra)
    subprocess.run(
        [sys.executable, "manage.py", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    return launch(env, data_dir / f"server-{port}.log", "--grace", "5")


def launch(
    env: dict[str, str],
    log_path: Path,
    *args: str,
    probe: str = "/health/ready",
    timeout: float = 30,
    with_key: bool = True,
) -> LiveServer:
    """Run `manage.py serve ARGS` with ``env`` (HOST/PORT set) until ``probe`` answers 200;
    ``with_key``: outside development, create an operator key for :meth:`LiveServer.client`."""
    api_key = None
    if (
        with_key
        and env.get("ENVIRONMENT", "development") != "development"
        and env.get("AUTH_ENABLED") != "false"
    ):
        api_key = create_key(env, "operations", "operator")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(
        f"http://127.0.0.1:{env['PORT']}",
        Path(env.get("DATA_DIR", ".")),
        env.get("DATABASE_URL", ""),
        process,
        log_path,
        api_key,
        env,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode}:\n{server.logs()[-4000:]}")
        try:
            if httpx.get(f"{server.url}{probe}", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"API did not become ready:\n{server.logs()[-4000:]}")


@dataclass(frozen=True)
class Stopped:
    """How an API process ended: its return code (``-N``: killed by signal N), whether it
    had to be killed after the timeout, and the seconds from the signal to its exit."""

    returncode: int
    killed: bool
    seconds: float

    @property
    def graceful(self) -> bool:
        """Exited by itself, with code 0, within the timeout."""
        return self.returncode == 0 and not self.killed


def terminate(server: LiveServer, sig: int = signal.SIGTERM, timeout: float = 20) -> Stopped:
    """Signal the API and wait for it to exit; SIGKILL it after ``timeout`` (``killed``)."""
    started = time.monotonic()
    killed = False
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            server.process.kill()
            server.process.wait(timeout=5)
    returncode = server.process.returncode
    assert returncode is not None
    return Stopped(returncode, killed, time.monotonic() - started)


def stop(server: LiveServer, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
    """:func:`terminate`, for callers that need only the return code."""
    return terminate(server, sig, timeout).returncode


@contextmanager
def running(data_dir: Path, database_url: str, **extra: str) -> Iterator[LiveServer]:
    server = start(data_dir, database_url, **extra)
    try:
        yield server
    finally:
        stop(server)


def wait_for(
    client: httpx.Client, job_id: str, statuses: set[str] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Poll a job until its status is in ``statuses`` (default: terminal)."""
    wanted = statuses or TERMINAL
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/reports/jobs/{job_id}").json()
        if body.get("status") in wanted:
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {body.get('status')} after {timeout}s: {body}")
