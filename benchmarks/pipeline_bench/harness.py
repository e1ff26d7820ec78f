"""The pipeline bench's harness: the run's scratch state and settings, the workers of
each side, the ledger's clock, the figures."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from kombu import Connection
from redis import Redis
from rq import Queue as RqQueue
from rq import Worker as RqWorker
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parents[1]  # benchmarks/
sys.path[:0] = [str(ROOT), str(ROOT / "backend"), str(HERE)]

import raw_tasks  # noqa: E402
from app import bootstrap  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.domain.queues import ReportType  # noqa: E402
from app.services.deps import Deps  # noqa: E402
from app.services.enqueue import enqueue_report  # noqa: E402
from bench_support import load, process, wait_until  # noqa: E402

ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
SECTIONS = ("celery", "rq", "live", "enqueue", "http")
CONCURRENCY = 2  # worker processes on every side (the machine has 2 cores)
CLIENTS = 2  # enqueuing threads of the live runs and of the backlogs
RQ_SHARE = 4  # RQ forks per job: its runs take --jobs / 4
WARMUP_JOBS = 10  # live runs: jobs run (and waited for) before the timed batch
ENQUEUE_CALLS, ENQUEUE_WARMUP = 500, 50
WAIT = 180.0  # the longest any drain, run or start may take (seconds)
RATE_LIMIT = 1_000_000  # the platform's enqueue budget per key per window during the bench
PY = sys.executable
BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:6.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the run


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    db: str  # SQLAlchemy URL of the fresh database
    prefix: str
    redis: Redis
    figures: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    rq_ids: list[str] = field(default_factory=list)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def pg(self) -> str:
        """The database for psycopg."""
        return self.db.replace("postgresql+psycopg://", "postgresql://")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a platform process (API, workers, CLI)."""
        return {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "DATA_DIR": str(self.tmp / "data"),
            "DATABASE_URL": self.db,
            "REDIS_URL": REDIS_URL,
            "QUEUE_PREFIX": self.prefix,
            "ENVIRONMENT": "production",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "METRICS_PORT": "0",  # no port to collide with another run's workers
            "RATE_LIMIT_REQUESTS": str(RATE_LIMIT),
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "API_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def raw_env(self, queue: str, **extra: str) -> dict[str, str]:
        """The environment of a raw worker: ``raw_jobs`` records into ``<queue>:results``."""
        return self.env(RAW_REDIS_URL=REDIS_URL, RAW_QUEUE=queue, PYTHONPATH=str(HERE), **extra)

    def settings(self, backend: str) -> Settings:
        """In-process settings equal to what a platform process with ``backend`` reads."""
        env = self.env(DISPATCH_BACKEND=backend)
        fields = {k.lower(): v for k, v in env.items() if k.lower() in Settings.fields()}
        return Settings(_env_file=None, **fields)  # type: ignore[call-arg]

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    @property
    def platform_queue(self) -> str:
        return f"{self.prefix}reports"


def purge_celery(*queues: str) -> None:
    """Drop the waiting messages of Celery queues on Redis (every priority list)."""
    with Connection(REDIS_URL) as conn:
        for queue in queues:
            conn.default_channel.queue_purge(queue)


def celery_consumes(queue: str) -> Callable[[], bool]:
    """True once a Celery worker answers that it consumes ``queue``."""

    def check() -> bool:
        replies = raw_tasks.app.control.inspect(timeout=0.5).active_queues() or {}
        return any(q["name"] == queue for qs in replies.values() for q in qs or ())

    return check


def rq_listening(b: Bench, queue: str, count: int) -> Callable[[], bool]:
    """True once ``count`` RQ workers registered on ``queue``."""
    rq = RqQueue(queue, connection=b.redis, serializer=JSONSerializer)
    return lambda: len(RqWorker.all(queue=rq, serializer=JSONSerializer)) >= count


@contextlib.contextmanager
def workers(
    b: Bench, kind: str, cmds: list[list[str]], env: dict[str, str], queue: str, *, ready: bool
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``cmds``; with ``ready``, return once they consume ``queue``."""
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                process(cmd, env, b.log(f"{queue}-{kind}{i}"), lambda: True, timeout=WAIT)
            )
            for i, cmd in enumerate(cmds)
        ]
        if ready:
            check = (
                celery_consumes(queue) if kind == "celery" else rq_listening(b, queue, len(procs))
            )
            wait_until(check, 60, f"{kind} workers on {queue}", every=0.2, watch=procs)
        yield procs


def raw_celery_cmd(queue: str) -> list[list[str]]:
    return [
        [
            *(PY, "-m", "celery", "-A", "raw_tasks", "worker", "-Q", queue),
            *("-c", str(CONCURRENCY), "-P", "prefork", "-l", "WARNING", "-n", f"{queue}@%h"),
        ]
    ]


RAW_RQ_CMD = [PY, "-c", "import raw_jobs; raw_jobs.rq_worker()"]


def raw_rq_env(b: Bench, queue: str) -> dict[str, str]:
    """The raw RQ worker imports the platform's worker class: ``backend/`` on the path."""
    env = b.raw_env(queue)
    env["PYTHONPATH"] += os.pathsep + str(ROOT / "backend")
    return env


def platform_workers(b: Bench, backend: str) -> tuple[list[list[str]], dict[str, str]]:
    env = b.env(DISPATCH_BACKEND=backend)
    if backend == "celery":
        return [[PY, "celery_manager.py", "worker", "reports", str(CONCURRENCY)]], env
    return [[PY, "manage.py", "rq-worker", "reports"]] * CONCURRENCY, env


@contextlib.contextmanager
def platform_deps(b: Bench, backend: str) -> Iterator[Deps]:
    """The platform's own services in this process, as the API builds them."""
    container = bootstrap.build(b.settings(backend))
    try:
        yield container.deps
    finally:
        container.close()


def enqueue_dummies(deps: Deps, count: int, clients: int) -> list[uuid.UUID]:
    """``count`` dummy jobs through ``enqueue_report`` from ``clients`` threads; their ids."""
    ids: list[uuid.UUID] = []
    lock = threading.Lock()

    def send() -> None:
        job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
        with lock:
            ids.append(job.id)

    load(count, clients, send)
    return ids


def ledger_span(
    b: Bench, ids: list[uuid.UUID], since: str, watch: list[subprocess.Popen[bytes]]
) -> float:
    """Seconds from the earliest ``since`` (``started_at``, ``created_at``) to the last
    ``finished_at`` of ``ids``, once every one is ``completed``."""
    with psycopg.connect(b.pg, autocommit=True) as conn:

        def done() -> bool:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'completed'), "
                "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) "
                "FROM report_jobs WHERE id = ANY(%s)",
                (ids,),
            ).fetchone()
            assert row is not None
            if row[1]:
                raise RuntimeError(f"{row[1]} platform jobs failed or were cancelled")
            return bool(row[0] == len(ids))

        wait_until(done, WAIT, f"{len(ids)} platform jobs", every=0.1, watch=watch)
        row = conn.execute(
            f"SELECT EXTRACT(EPOCH FROM max(finished_at) - min({since})) "
            "FROM report_jobs WHERE id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert row is not None
    return float(row[0])


def rate(name: str, jobs: int, span: float) -> float:
    say(f"{name}: {jobs} jobs in {span:.2f} s = {jobs / span:.0f} jobs/s")
    return jobs / span
