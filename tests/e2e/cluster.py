"""A balanced stack on loopback, as an operator runs it: HAProxy with the project's own
configuration (``deploy/haproxy/haproxy.cfg``, its listener, servers and socket made local)
in front of API replicas in production mode, Celery workers per queue and an RQ worker, all
on one PostgreSQL ledger, Redis and a local S3 server (moto).

Used by the replica tests (``tests/e2e/test_replicas.py``) and by ``make loadtest``.
"""

from __future__ import annotations

import csv
import io
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.db.migrations import upgrade

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, create_key, free_port, launch
from tests.integration.s3 import MotoServer, new_bucket, s3_client, storage_env
from tests.integration.workers import (
    WorkerProcess,
    base_env,
    delete_redis_keys,
    wait_until,
    worker_env,
)

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
#: Seconds a stopping replica keeps serving with readiness at 503: four health checks.
DRAIN_SECONDS = 2.0


def balancer_config(
    port: int, replicas: list[int], admin: Path, *, without: tuple[str, ...] = ()
) -> str:
    """``deploy/haproxy/haproxy.cfg`` with its listener on ``port``, one server per replica
    port and its admin socket at ``admin``; lines containing any of ``without`` are left out
    (how a test shows what a line is for)."""
    lines = []
    for line in HAPROXY_CFG.read_text().splitlines():
        words = line.split()
        if any(part in line for part in without):
            continue
        if words[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{port}"
        elif words[:2] == ["stats", "socket"]:
            line = f"    stats socket {admin} mode 600 level admin"
        elif words[:1] == ["server-template"]:
            lines += [f"    server api{n} 127.0.0.1:{p}" for n, p in enumerate(replicas)]
            continue
        elif words[:1] == ["log"] and "stdout" in words:
            line = "    log stdout format raw local0 notice"
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Balancer:
    """``haproxy -db`` (in the foreground) with a configuration of its own."""

    config: Path
    port: int
    admin: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        check = subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config)],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self.admin.exists, 10)
        return self

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Each replica's state as the balancer sees it (``UP``, ``DOWN``, ``UP 1/2``...)."""
        rows = csv.DictReader(io.StringIO(self.ask("show stat").lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait(self, server: str, state: str, timeout: float = 20) -> None:
        wait_until(lambda: self.states().get(server) == state, timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass(frozen=True)
class Restart:
    """How a replica went: its exit code, the seconds from SIGTERM until the balancer took
    it out of rotation (and whether it was still running then), and until it exited."""

    returncode: int
    left_rotation: float
    running_when_left: bool
    exited: float


@dataclass
class Cluster:
    """The running stack: the balancer, the replicas (by index), the workers (by name)."""

    data: Path
    env: dict[str, str]
    database_url: str
    balancer: Balancer
    ports: list[int]
    replicas: list[LiveServer] = field(default_factory=list)
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    api: dict[str, str] = field(default_factory=dict)  # the replicas' own settings
    api_key: str = ""

    @property
    def url(self) -> str:
        return self.balancer.url

    def start_replica(self, n: int) -> LiveServer:
        env = {**self.env, **self.api, "PORT": str(self.ports[n]), "HOST": "127.0.0.1"}
        replica = launch(env, self.data / f"api-{n}.log", "--grace", "10", with_key=False)
        if n < len(self.replicas):
            self.replicas[n] = replica
        else:
            self.replicas.append(replica)
        return replica

    def restart_replica(self, n: int) -> Restart:
        """SIGTERM replica ``n``, follow it out of the balancer's rotation and out of
        existence, start it again and wait until the balancer sends it traffic again."""
        replica, name = self.replicas[n], f"api{n}"
        signalled = time.monotonic()
        replica.process.send_signal(signal.SIGTERM)
        wait_until(lambda: self.balancer.states()[name].startswith("DOWN"), 30)
        left = time.monotonic() - signalled
        alive_then = replica.process.poll() is None
        returncode = replica.process.wait(timeout=30)
        restart = Restart(returncode, left, alive_then, time.monotonic() - signalled)
        self.start_replica(n)
        self.balancer.wait(name, "UP")
        return restart

    def stop_replicas(self) -> None:
        """SIGTERM every replica at once, then wait for each (SIGKILL after 15 s)."""
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=5)

    def start_worker(self, name: str, command: list[str], ready: str) -> WorkerProcess:
        worker = WorkerProcess(name, command, self.env, self.data / f"{name}.log").start(ready)
        self.workers[name] = worker
        return worker

    def celery_worker(self, name: str, queues: str, concurrency: int = 1) -> WorkerProcess:
        node = f"{name}-{secrets.token_hex(2)}@%h"
        command = ["celery_manager.py", "worker", queues, str(concurrency), "--name", node]
        return self.start_worker(name, command, " ready.")

    def stop_worker(self, name: str) -> int | None:
        return self.workers.pop(name).stop()


@contextmanager
def cluster(
    data: Path,
    *,
    replicas: int = 3,
    without: tuple[str, ...] = (),
    api: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[Cluster]:
    """The stack of this module: ``settings`` for every process, ``api`` for the replicas
    alone; a Celery worker on ``reports``, one on the other queues, an RQ worker on all."""
    prefix = f"c{secrets.token_hex(3)}-"
    with ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database(data.name[:20]))
        upgrade(url)
        moto = MotoServer(data / "s3.log").start()
        stack.callback(moto.stop)
        bucket = new_bucket(s3_client(moto.url))
        env = worker_env(
            base_env(url, data, prefix),
            **{
                **storage_env(moto.url, bucket),
                "ENVIRONMENT": "production",
                "DISPATCH_BACKEND": "auto",
                "INLINE_FALLBACK": "false",
                "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
                "HEARTBEAT_TIMEOUT": "5",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",  # the workers say when they are ready
                **settings,
            },
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        stack.callback(delete_redis_keys, prefix)
        ports = [free_port() for _ in range(replicas)]
        admin = data / "haproxy.sock"
        config = data / "haproxy.cfg"
        port = free_port()
        config.write_text(balancer_config(port, ports, admin, without=without))
        balancer = Balancer(config, port, admin, data / "haproxy.log").start()
        stack.callback(balancer.stop)
        running = Cluster(data, env, url, balancer, ports, api=api or {})
        running.api_key = create_key(env, "operations", "operator")
        stack.callback(lambda: [w.stop() for w in list(running.workers.values())])
        running.celery_worker("celery-reports", "reports")
        running.celery_worker("celery-others", "documents,notifications,celery")
        running.start_worker("rq", ["manage.py", "rq-worker"], "Listening on")
        stack.callback(running.stop_replicas)
        for n in range(replicas):
            running.start_replica(n)
        for n in range(replicas):
            balancer.wait(f"api{n}", "UP")
        yield running
