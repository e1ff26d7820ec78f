"""The platform beside its peers, in one run: worker drains, live runs, enqueue, HTTP.

Every figure is measured in this run, on this machine, against a fresh PostgreSQL
database (created, then dropped) and Redis (queues under a random prefix). Sections,
each starting and stopping its own processes (``--only`` runs some of them):

``celery``   drain of a backlog enqueued with no worker running, one prefork worker of 2
             processes: raw Celery (no-op task), Celery with a PostgreSQL result backend
             (the same no-op, STARTED and SUCCESS states stored), the platform (dummy
             jobs, ledger), timed first start to last finish.
``rq``       the same with 2 RQ workers of the platform's worker class, ``--jobs`` / 4.
``live``     workers up first, then jobs enqueued in-process from 2 threads: first
             enqueue to last finish, Celery and RQ, platform and raw.
``enqueue``  ms per job of the platform's ``enqueue_report`` (Celery, no worker) and of a
             raw ``apply_async``, one call at a time.
``http``     wrk POST against ``manage.py serve`` (development, then production with an
             API key) and ``benchmarks/minimal_app.py``, 50 then 4 connections.

    .venv/bin/python benchmarks/pipeline.py [--jobs 1000] [--duration 10]
        [--only celery,rq,live,enqueue,http] [--out benchmarks/results/pipeline.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psycopg
from celery import Celery
from kombu import Connection
from redis import Redis
from rq import Queue as RqQueue
from rq import Worker as RqWorker
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "backend"), str(HERE)]

import raw_tasks  # noqa: E402
from app import bootstrap  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.logging import JsonFormatter  # noqa: E402
from app.domain.jobs import Backend, ReportType  # noqa: E402
from app.services.deps import Deps  # noqa: E402
from app.services.enqueue import enqueue_report  # noqa: E402
from bench_support import load, process, scratch_dir, wait_results, wait_until  # noqa: E402
from profile_ledger import parallel_rate  # noqa: E402

from tests.e2e.server import free_port, running  # noqa: E402

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


# --------------------------------------------------------------------------- drains


def celery_drain(b: Bench) -> None:
    jobs = b.args.jobs
    b.figures["celery_drain.raw"] = raw_celery_drain(b, f"{b.prefix}rawcelery", jobs, None)
    backend = "db+" + b.db
    Celery("tables", backend=backend, set_as_current=False).backend  # noqa: B018 (creates them)
    b.figures["celery_drain.pg"] = raw_celery_drain(b, f"{b.prefix}rawpg", jobs, backend)
    b.figures["celery_drain.platform"] = platform_drain(b, "celery", jobs)
    b.figures["celery_drain.ceiling"] = ledger_ceiling(b, jobs)


def ledger_ceiling(b: Bench, jobs: int) -> float:
    """``run_report`` of ``jobs`` queued dummy jobs in two forked processes with no
    broker: what the ledger alone lets a pool of that size drain, whatever carries the jobs."""
    with platform_deps(b, "celery") as deps:
        ids = enqueue_dummies(deps, jobs, CLIENTS)
    purge_celery(*(f"{b.prefix}{q}" for q in ("reports", "documents", "notifications", "celery")))
    worker = bootstrap.build_worker(Backend.CELERY, b.settings("celery"))
    try:
        return rate(
            "ledger alone (run_report, no broker)",
            jobs,
            jobs / parallel_rate(worker, ids, CONCURRENCY),
        )
    finally:
        worker.close()


def raw_celery_drain(b: Bench, queue: str, jobs: int, result_backend: str | None) -> float:
    """Pre-enqueue, then start the worker; first task start to last end (with a result
    backend: to the last ``date_done`` of ``celery_taskmeta``)."""
    for _ in range(jobs):
        raw_tasks.celery_noop.apply_async(
            (time.time(),), queue=queue, ignore_result=result_backend is None
        )
    extra = {"RAW_RESULT_BACKEND": result_backend} if result_backend else {}
    env = b.raw_env(queue, **extra)
    with workers(b, "celery", raw_celery_cmd(queue), env, queue, ready=False) as procs:
        records = wait_results(b.redis, f"{queue}:results", jobs, timeout=WAIT, watch=procs)
        first_start = min(r[1] for r in records)
        if result_backend is None:
            return rate("raw Celery drain", jobs, max(r[2] for r in records) - first_start)
        last_done = taskmeta_last_done(b, jobs, procs)
    return rate("Celery + PostgreSQL results drain", jobs, last_done - first_start)


def taskmeta_last_done(b: Bench, jobs: int, watch: list[subprocess.Popen[bytes]]) -> float:
    """The epoch of the last SUCCESS in ``celery_taskmeta``, once there are ``jobs`` of them.

    ``date_done`` has no time zone: it holds the UTC time converted to the session's zone.
    """
    with psycopg.connect(b.pg, autocommit=True) as conn:

        def successes() -> int:
            row = conn.execute(
                "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
            ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: successes() >= jobs, WAIT, "Celery results", every=0.1, watch=watch)
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM max(date_done) AT TIME ZONE current_setting('TimeZone')) "
            "FROM celery_taskmeta WHERE status = 'SUCCESS'"
        ).fetchone()
    assert row is not None
    return float(row[0])


def platform_drain(b: Bench, backend: str, jobs: int) -> float:
    """Enqueue ``jobs`` with no worker, start the workers; ledger first start to last finish."""
    with platform_deps(b, backend) as deps:
        ids = enqueue_dummies(deps, jobs, CLIENTS)
    if backend == "rq":
        b.rq_ids += map(str, ids)
    cmds, env = platform_workers(b, backend)
    with workers(b, backend, cmds, env, b.platform_queue, ready=False) as procs:
        span = ledger_span(b, ids, "started_at", procs)
    return rate(f"platform {backend} drain", jobs, span)


def rq_drain(b: Bench) -> None:
    jobs = max(1, b.args.jobs // RQ_SHARE)
    queue = f"{b.prefix}rawrq"
    rq = RqQueue(queue, connection=b.redis, serializer=JSONSerializer)
    b.rq_ids += [rq.enqueue("raw_jobs.rq_noop", time.time()).id for _ in range(jobs)]
    cmds = [RAW_RQ_CMD] * CONCURRENCY
    with workers(b, "rq", cmds, raw_rq_env(b, queue), queue, ready=False) as procs:
        records = wait_results(b.redis, f"{queue}:results", jobs, timeout=WAIT, watch=procs)
    span = max(r[2] for r in records) - min(r[1] for r in records)
    b.figures["rq_drain.raw"] = rate("raw RQ drain", jobs, span)
    b.figures["rq_drain.platform"] = platform_drain(b, "rq", jobs)


# --------------------------------------------------------------------------- live


def live(b: Bench) -> None:
    celery_jobs, rq_jobs = b.args.jobs, max(1, b.args.jobs // RQ_SHARE)
    queue = f"{b.prefix}livecelery"
    b.figures["live_celery.raw"] = raw_live(
        b,
        "celery",
        raw_celery_cmd(queue),
        b.raw_env(queue),
        queue,
        celery_jobs,
        lambda: raw_tasks.celery_noop.apply_async((time.time(),), queue=queue),
    )
    b.figures["live_celery.platform"] = platform_live(b, "celery", celery_jobs)
    queue = f"{b.prefix}liverq"
    rq = RqQueue(queue, connection=b.redis, serializer=JSONSerializer)
    lock = threading.Lock()

    def send_rq() -> None:
        job_id = rq.enqueue("raw_jobs.rq_noop", time.time()).id
        with lock:
            b.rq_ids.append(job_id)

    b.figures["live_rq.raw"] = raw_live(
        b, "rq", [RAW_RQ_CMD] * CONCURRENCY, raw_rq_env(b, queue), queue, rq_jobs, send_rq
    )
    b.figures["live_rq.platform"] = platform_live(b, "rq", rq_jobs)


def raw_live(
    b: Bench,
    kind: str,
    cmds: list[list[str]],
    env: dict[str, str],
    queue: str,
    jobs: int,
    send: Callable[[], None],
) -> float:
    """Workers ready, a warm-up, then ``jobs`` sends: first send to last end."""
    key = f"{queue}:results"
    with workers(b, kind, cmds, env, queue, ready=True) as procs:
        load(WARMUP_JOBS, 1, send)
        wait_results(b.redis, key, WARMUP_JOBS, timeout=WAIT, watch=procs)
        b.redis.delete(key)
        load(jobs, CLIENTS, send)
        records = wait_results(b.redis, key, jobs, timeout=WAIT, watch=procs)
    span = max(r[2] for r in records) - min(r[0] for r in records)
    return rate(f"raw {kind} live", jobs, span)


def platform_live(b: Bench, backend: str, jobs: int) -> float:
    """Workers ready, a warm-up, then ``jobs`` enqueues: first ``created_at`` to last finish."""
    cmds, env = platform_workers(b, backend)
    with (
        workers(b, backend, cmds, env, b.platform_queue, ready=True) as procs,
        platform_deps(b, backend) as deps,
    ):
        warmup = enqueue_dummies(deps, WARMUP_JOBS, 1)
        ledger_span(b, warmup, "created_at", procs)
        ids = enqueue_dummies(deps, jobs, CLIENTS)
        span = ledger_span(b, ids, "created_at", procs)
    if backend == "rq":
        b.rq_ids += map(str, warmup + ids)
    return rate(f"platform {backend} live", jobs, span)


# --------------------------------------------------------------------------- enqueue


def enqueue(b: Bench) -> None:
    with platform_deps(b, "celery") as deps:

        def platform_send() -> None:
            enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={})

        b.figures["enqueue.platform"] = ms_per_call("platform enqueue_report", platform_send)
    queue = f"{b.prefix}rawenqueue"

    def raw_send() -> None:
        raw_tasks.celery_noop.apply_async((time.time(),), queue=queue)

    b.figures["enqueue.raw"] = ms_per_call("raw apply_async", raw_send)
    purge_celery(b.platform_queue, queue)


def ms_per_call(name: str, call: Callable[[], None]) -> float:
    load(ENQUEUE_WARMUP, 1, call)
    latencies = load(ENQUEUE_CALLS, 1, call)
    mean = statistics.mean(latencies)
    say(f"{name}: {mean:.3f} ms/job (p50 {statistics.median(latencies):.3f})")
    return mean


# --------------------------------------------------------------------------- HTTP


#: HTTP rounds: the three servers take turns (A B C A B C …), so that the machine's drift
#: falls on each of them alike; each figure is the median of its rounds.
HTTP_ROUNDS = 3
#: Seconds of rest after each wrk run. A 50-connection run ends with requests still in the
#: server (wrk closes its sockets; the server finishes what it accepted); without the rest,
#: the next run's first requests wait behind them and its p99 is that backlog, not the
#: latency at 4 connections. Measured without it (2026-12-01): platform p99 at 4
#: connections 80–130 ms right after a 50-connection run, 31–37 ms after 1 s of rest.
SETTLE_SECONDS = 1.0


def http(b: Bench) -> None:
    path = "/api/v1/reports/dummy"
    targets: dict[str, tuple[str, str]] = {}
    with contextlib.ExitStack() as stack:
        for environment in ("development", "production"):
            extra = b.env(DISPATCH_BACKEND="celery", ENVIRONMENT=environment)
            extra = {k: v for k, v in extra.items() if k not in ("DATA_DIR", "DATABASE_URL")}
            server = stack.enter_context(running(b.tmp / f"api-{environment}", b.db, **extra))
            key = server.create_key("bench", "submitter") if environment == "production" else ""
            targets[f"http.{environment}"] = (server.url + path, key)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = b.env(
            HOST="127.0.0.1",
            PORT=str(port),
            MINIMAL_DATABASE_URL=b.db,
            MINIMAL_BROKER_URL=REDIS_URL,
            MINIMAL_QUEUE=f"{b.prefix}minimal",
        )
        ready = answers_200(url + "/health/live")
        minimal = [PY, str(HERE / "minimal_app.py")]
        stack.enter_context(process(minimal, env, b.log("minimal"), ready, timeout=60))
        targets["http.minimal"] = (url + "/enqueue", "")
        wrk_rounds(b, targets)
    purge_celery(b.platform_queue, f"{b.prefix}minimal")


def wrk_rounds(b: Bench, targets: dict[str, tuple[str, str]]) -> None:
    """A 2 s warm-up each, then ``HTTP_ROUNDS`` turns of ``--duration / HTTP_ROUNDS`` (whole
    seconds) at 50 and at 4 connections; the medians are the figures."""
    for url, key in targets.values():
        wrk(url, 4, 2, key)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    seconds = max(1, round(b.args.duration / HTTP_ROUNDS))  # wrk takes whole seconds
    for _ in range(HTTP_ROUNDS):
        for name, (url, key) in targets.items():
            for connections in (50, 4):
                result = wrk(url, connections, seconds, key)
                runs.setdefault((name, connections), []).append(result)
                time.sleep(SETTLE_SECONDS)
    for (name, connections), results in runs.items():
        for measure in ("rps", "p50", "p99"):
            value = statistics.median(r[measure] for r in results)
            b.figures[f"{name}.{connections}.{measure}"] = value
        say(
            f"{name} @{connections}: req/s {[round(r['rps']) for r in results]}, "
            f"p99 ms {[round(r['p99'], 1) for r in results]}"
        )


def answers_200(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    return check


def wrk(url: str, connections: int, duration: float, key: str) -> dict[str, float]:
    """One wrk run (2 threads); req/s and p50/p99 ms. Raises on any error or non-2xx."""
    done = subprocess.run(
        [
            *("wrk", "-t", "2", "-c", str(connections), "-d", f"{duration:g}s"),
            *("--timeout", "10s", "--latency", "-s", str(HERE / "wrk_post.lua"), url),
        ],
        env={**os.environ, "BENCH_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk said nothing usable:\n{done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    if data["socket_errors"] or data["status_errors"]:
        raise RuntimeError(f"wrk on {url}: errors\n{done.stdout}")
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50": data["p50_us"] / 1000,
        "p99": data["p99_us"] / 1000,
    }


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    measure: str
    platform: str  # figure keys
    peer: str
    fmt: str
    target: str = "—"
    meets: Callable[[float, float], bool] | None = None


ROWS = [
    Row(
        "Celery drain, jobs/s — vs raw Celery prefork",
        "celery_drain.platform",
        "celery_drain.raw",
        "{:.0f}",
        "≥ 0.5×",
        lambda p, q: p / q >= 0.5,
    ),
    Row(
        "Celery drain, jobs/s — vs Celery + PostgreSQL result backend",
        "celery_drain.platform",
        "celery_drain.pg",
        "{:.0f}",
        "≥ 2×",
        lambda p, q: p / q >= 2,
    ),
    Row(
        "Ledger alone: run_report in 2 processes, no broker, jobs/s — vs raw Celery",
        "celery_drain.ceiling",
        "celery_drain.raw",
        "{:.0f}",
    ),
    Row(
        "RQ drain, jobs/s — vs raw RQ, same worker class",
        "rq_drain.platform",
        "rq_drain.raw",
        "{:.0f}",
        "≥ 1.0×",
        lambda p, q: p / q >= 1.0,
    ),
    Row(
        "Live end to end, Celery, jobs/s — vs raw Celery",
        "live_celery.platform",
        "live_celery.raw",
        "{:.0f}",
    ),
    Row("Live end to end, RQ, jobs/s — vs raw RQ", "live_rq.platform", "live_rq.raw", "{:.0f}"),
    Row(
        "In-process enqueue, ms/job — vs raw apply_async",
        "enqueue.platform",
        "enqueue.raw",
        "{:.2f}",
        "platform ≤ 2 ms",
        lambda p, _: p <= 2.0,
    ),
    Row(
        "HTTP enqueue, 50 conns, req/s — vs minimal FastAPI",
        "http.development.50.rps",
        "http.minimal.50.rps",
        "{:.0f}",
        "≥ 1.0×",
        lambda p, q: p / q >= 1.0,
    ),
    Row(
        "HTTP enqueue p99, 4 conns, ms — vs minimal FastAPI",
        "http.development.4.p99",
        "http.minimal.4.p99",
        "{:.1f}",
        "≤ 1.2×",
        lambda p, q: p / q <= 1.2,
    ),
    Row(
        "HTTP enqueue, 50 conns, req/s — production (key) vs development",
        "http.production.50.rps",
        "http.development.50.rps",
        "{:.0f}",
        "≥ 0.9×",
        lambda p, q: p / q >= 0.9,
    ),
]

LEGEND = f"""\
How each is timed (ratio = platform ÷ peer; every side runs {CONCURRENCY} worker processes;
brokers on Redis; ledger and result tables on PostgreSQL):

- **Drains**: the backlog is enqueued with no worker running, then the workers start;
  span = first task start → last task end. Raw: start and end recorded by the no-op task
  in Redis. Celery + PostgreSQL results (`task_track_started=True`: STARTED then SUCCESS
  stored per task): first start recorded by the task → last `date_done` of
  `celery_taskmeta`. Platform (dummy jobs: claim, render, artifact written and fsynced,
  outcome committed): ledger `max(finished_at) − min(started_at)`. Raw RQ runs the
  platform's `ReportWorker` class (fork per job, JSON, scheduler on) without the
  platform's container. RQ sizes are `--jobs` / {RQ_SHARE}. Ledger alone: the same dummy
  jobs, queued, then `run_report` in {CONCURRENCY} forked processes with no broker
  (`benchmarks/profile_ledger.py`'s `parallel_rate`): the most any {CONCURRENCY}-process
  worker could drain while every job keeps its claim and outcome commits.
- **Live end to end**: workers consuming first, {WARMUP_JOBS} warm-up jobs, then the jobs
  enqueued in-process from {CLIENTS} threads; span = first enqueue (raw: send time;
  platform: ledger `created_at`) → last end (raw: recorded end; platform: `finished_at`).
- **In-process enqueue**: mean ms of {ENQUEUE_CALLS} sequential calls after {ENQUEUE_WARMUP}
  warm-up calls, no worker running: the platform's `enqueue_report` (DISPATCH_BACKEND=celery:
  validation, ledger write, publish) vs `apply_async` of the no-op; queues purged after.
- **HTTP**: wrk, 2 threads, POST; the three servers run together and take turns: a 2 s
  warm-up each, then {HTTP_ROUNDS} rounds of `--duration`/{HTTP_ROUNDS} at 50 then at 4
  connections on each in turn, {SETTLE_SECONDS:g} s of rest after each run (so that a run
  does not start behind the last one's backlog), the median of the rounds reported; one
  uvicorn worker each side (API_WORKERS=1), uvicorn's default ("auto") loop and HTTP
  parser; no worker consumes (queues purged after).
  Platform: `POST /api/v1/reports/dummy` through `manage.py serve`, development (no key),
  then production (`X-API-Key`, a submitter key, checked on every request); its rate limit
  is raised to RATE_LIMIT_REQUESTS={RATE_LIMIT} per 60 s for the bench (the token-bucket
  script still runs on every request). With no worker consuming, the platform logs one
  `dispatch.no_worker` warning per job. Minimal: `benchmarks/minimal_app.py`, one insert
  and one `send_task`, 201.
- The machine may be shared: read the ratios within one run; the load average is above.
"""


def report(b: Bench, command: str, wall: float) -> str:
    f = b.figures
    lines = [
        f"- date: {date.today().isoformat()}; wall time of the run: {wall:.0f} s",
        f"- command: `{command}`",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, CPU {cpu_model()}; load average "
        f"(1 min) {b.load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        "- versions: Python "
        + sys.version.split()[0]
        + ", "
        + ", ".join(
            f"{name} {version(name)}"
            for name in ("celery", "rq", "SQLAlchemy", "psycopg", "fastapi", "uvicorn")
        ),
        f"- sizes: --jobs {b.args.jobs} (RQ: {max(1, b.args.jobs // RQ_SHARE)}), "
        f"--duration {b.args.duration:g} s, sections: {', '.join(b.args.only)}",
        "",
        "| measure | platform | peer | ratio | target | met |",
        "|---|---:|---:|---:|---|:-:|",
    ]
    for row in ROWS:
        if row.platform not in f or row.peer not in f:
            continue
        p, q = f[row.platform], f[row.peer]
        met = "" if row.meets is None else ("✓" if row.meets(p, q) else "✗")
        lines.append(
            f"| {row.measure} | {row.fmt.format(p)} | {row.fmt.format(q)} "
            f"| {p / q:.2f}× | {row.target} | {met} |"
        )
    http_rows = [
        f"| {side} | {conns} | {f[k + '.rps']:.0f} | {f[k + '.p50']:.1f} | {f[k + '.p99']:.1f} |"
        for side in ("development", "production", "minimal")
        for conns in (50, 4)
        if f"{(k := f'http.{side}.{conns}')}.rps" in f
    ]
    if http_rows:
        lines += [
            "",
            "| HTTP server | connections | req/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *http_rows,
        ]
    if b.failed:
        lines += ["", "**Failed sections** (see stderr):"]
        lines += [f"- {name}: {error}" for name, error in b.failed.items()]
    return "\n".join([*lines, "", LEGEND])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


# --------------------------------------------------------------------------- main


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "celery": celery_drain,
    "rq": rq_drain,
    "live": live,
    "enqueue": enqueue,
    "http": http,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per Celery run (RQ: / 4)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown or not args.only:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose among {', '.join(SECTIONS)}")
    if args.jobs < RQ_SHARE or args.duration < 1:
        parser.error(f"--jobs must be at least {RQ_SHARE} and --duration at least 1")
    return args


def main() -> int:
    args = parse_args()
    if "http" in args.only and subprocess.run(["which", "wrk"], capture_output=True).returncode:
        sys.exit("wrk is missing: apt-get install -y wrk (make bench does it)")
    command = shlex.join([os.path.relpath(PY, ROOT), *sys.argv])
    prefix = f"bench{secrets.token_hex(3)}-"
    name = f"bench_pipeline_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    raw_tasks.app.conf.broker_url = REDIS_URL
    redis = Redis.from_url(REDIS_URL)
    try:
        with scratch_dir("bench-pipeline-") as tmp:
            b = Bench(args, Path(tmp), db, prefix, redis)
            run(b)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for key in redis.scan_iter(match=f"*{prefix}*"):
            redis.delete(key)
        for member in redis.smembers("rq:queues"):  # RQ's registry of queue names
            if prefix.encode() in member:
                redis.srem("rq:queues", member)
    text = report(b, command, time.monotonic() - BEGAN)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Pipeline: the platform beside its peers, one run\n\n{text}")
    return 1 if b.failed else 0


def run(b: Bench) -> None:
    # In-process platform code logs as the API would at WARNING, to a file.
    handler = logging.FileHandler(b.log("in-process"))
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    subprocess.run(
        [PY, "manage.py", "migrate"], cwd=ROOT, env=b.env(), check=True, capture_output=True
    )
    try:
        for section in b.args.only:
            say(f"section {section}")
            try:
                RUNNERS[section](b)
            except Exception as exc:
                traceback.print_exc()
                b.failed[section] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        for job_id in b.rq_ids:  # RQ job hashes are not under our prefix
            b.redis.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")


if __name__ == "__main__":
    sys.exit(main())
