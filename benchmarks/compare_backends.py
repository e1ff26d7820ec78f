"""Inline vs Celery vs RQ through the platform, beside raw Celery and raw RQ.

For each platform backend it starts a real API (``manage.py serve``, ledger on
PostgreSQL) forced onto that backend, with real workers (a prefork Celery worker of 2
processes, 2 RQ workers, or the inline pool of 2 threads). It times S jobs sent one at a
time on idle workers (enqueue latency through the API, enqueue-to-start latency from the
ledger, p50/p99), then N dummy jobs from C concurrent clients (throughput: N / time from
the first enqueue to the last finish). Raw Celery and raw RQ run a no-op job on the same
Redis with the same concurrency, without API or ledger; the ratio columns give the
platform's overhead.

    .venv/bin/python benchmarks/compare_backends.py [--samples 30] [--jobs 200] [--clients 4]
        [--out benchmarks/results/compare_backends.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "backend"), str(HERE)]

from bench_support import Result, load, pct, process, wait_results  # noqa: E402

from tests.e2e.server import running  # noqa: E402

ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
CONCURRENCY = 2


# --------------------------------------------------------------------------- platform


def platform_run(
    backend: str,
    env: dict[str, str],
    data_dir: Path,
    db: str,
    jobs: int,
    clients: int,
    samples: int,
) -> Result:
    extra = {k: v for k, v in env.items() if k not in ("DATA_DIR", "DATABASE_URL")}
    extra.update(DISPATCH_BACKEND=backend, LOG_LEVEL="WARNING")
    with (
        running(data_dir, db, **extra) as server,
        server.client(timeout=30) as http,  # thread-safe, kept alive
    ):
        ids: list[str] = []

        def send() -> None:
            response = http.post("/api/v1/reports/dummy")
            response.raise_for_status()
            ids.append(response.json()["id"])

        load(10, 1, send)  # warm-up: connections, first probes, imports in workers
        wait_finished(db, ids)
        # Latency, one job at a time on idle workers: what a single caller sees.
        enqueue_ms: list[float] = []
        start_ms: list[float] = []
        for _ in range(samples):
            ids.clear()
            enqueue_ms += load(1, 1, send)
            [(created, started, _)] = wait_finished(db, ids)
            start_ms.append((started - created).total_seconds() * 1000)
        # Throughput: N jobs from C clients, first enqueue to last finish.
        ids.clear()
        load(jobs, clients, send)
        rows = wait_finished(db, ids)
    span = (max(r[2] for r in rows) - min(r[0] for r in rows)).total_seconds()
    return Result(f"platform: {backend}", enqueue_ms, start_ms, jobs / span)


def wait_finished(db: str, ids: list[str]) -> list[tuple[datetime, datetime, datetime]]:
    url = db.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + 300
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT created_at, started_at, finished_at FROM report_jobs "
                "WHERE id = ANY(%s::uuid[]) AND status = 'completed'",
                (ids,),
            ).fetchall()
            if len(rows) == len(ids):
                return [(r[0], r[1], r[2]) for r in rows]
            time.sleep(0.005)
    raise RuntimeError(f"only {len(rows)}/{len(ids)} jobs completed")


# --------------------------------------------------------------------------- raw


def raw_run(
    name: str, jobs: int, clients: int, samples: int, send: Callable[[float], None], key: str
) -> Result:
    redis = Redis.from_url(REDIS_URL)

    def batch(count: int, threads: int) -> tuple[list[float], list[list[float]]]:
        redis.delete(key)
        latencies = load(count, threads, lambda: send(time.time()))
        return latencies, wait_results(redis, key, count)

    batch(5, 1)
    enqueue_ms: list[float] = []
    start_ms: list[float] = []
    for _ in range(samples):
        latencies, [(sent, started, _)] = batch(1, 1)
        enqueue_ms += latencies
        start_ms.append((started - sent) * 1000)
    _, records = batch(jobs, clients)
    span = max(r[2] for r in records) - min(r[0] for r in records)
    redis.delete(key)
    return Result(name, enqueue_ms, start_ms, jobs / span)


# --------------------------------------------------------------------------- report


def table(results: dict[str, Result], jobs: int, clients: int, samples: int) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}. Latencies: {samples} jobs one at a time "
        f"on idle workers. Throughput: {jobs} dummy "
        f"jobs from {clients} concurrent clients, first enqueue to last finish. "
        f"{CONCURRENCY} worker processes (Celery prefork, RQ workers) or threads (inline); "
        f"ledger on PostgreSQL, brokers on Redis; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}.",
        "",
        "| backend | enqueue p50 ms | enqueue p99 ms | enqueue→start p50 ms "
        "| enqueue→start p99 ms | throughput jobs/s | enqueue p50 vs raw | throughput vs raw |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        raw = results.get(f"raw {key.split(': ')[-1]}")
        ratio = "— | —"
        if raw is not None and key.startswith("platform"):
            ratio = (
                f"×{statistics.median(r.enqueue_ms) / statistics.median(raw.enqueue_ms):.1f} | "
                f"×{r.jobs_per_s / raw.jobs_per_s:.2f}"
            )
        lines.append(
            f"| {r.name} | {statistics.median(r.enqueue_ms):.1f} | {pct(r.enqueue_ms, 0.99):.1f} "
            f"| {statistics.median(r.start_ms):.1f} | {pct(r.start_ms, 0.99):.1f} "
            f"| {r.jobs_per_s:.0f} | {ratio} |"
        )
    lines += [
        "",
        "Platform enqueue = `POST /api/v1/reports/dummy` (HTTP, validation, ledger insert, "
        "publish, `queued` update); raw enqueue = `apply_async` / `Queue.enqueue` in-process. "
        "Enqueue→start: ledger `started_at - created_at` (platform), worker clock minus "
        "send time (raw). Ratios: platform ÷ raw on the same broker (enqueue ×10 = ten times "
        "slower to enqueue; throughput ×0.50 = half the jobs per second).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30, help="jobs timed one at a time")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    prefix = f"bench{secrets.token_hex(3)}-"
    name = f"bench_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    results: dict[str, Result] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results.update(run_all(Path(tmp), db, prefix, args))
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis = Redis.from_url(REDIS_URL)
        for key in redis.scan_iter(match=f"*{prefix}*"):
            redis.delete(key)
    report = table(results, args.jobs, args.clients, args.samples)
    print(report)
    if args.out:
        command = "python benchmarks/compare_backends.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# Backend comparison\n\n`{command.strip()}`\n\n{report}\n")


def run_all(tmp: Path, db: str, prefix: str, args: argparse.Namespace) -> dict[str, Result]:
    py = sys.executable
    sizes = (args.jobs, args.clients, args.samples)
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "DATA_DIR": str(tmp / "data"),
        "DATABASE_URL": db,
        "REDIS_URL": REDIS_URL,
        "QUEUE_PREFIX": prefix,
        "ENVIRONMENT": "production",
        "INLINE_WORKERS": str(CONCURRENCY),
        "LOG_LEVEL": "INFO",  # workers say when they are ready; the API runs at WARNING
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    raw_env = {
        **env,
        "RAW_REDIS_URL": REDIS_URL,
        "RAW_QUEUE": f"{prefix}raw",
        "PYTHONPATH": str(HERE),
    }
    subprocess.run([py, "manage.py", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    results: dict[str, Result] = {}
    results["platform: inline"] = platform_run("inline", env, tmp / "data", db, *sizes)
    celery_cmd = [py, "celery_manager.py", "worker", "reports", str(CONCURRENCY)]
    with process(celery_cmd, env, tmp / "celery.log", " ready."):
        results["platform: celery"] = platform_run("celery", env, tmp / "data", db, *sizes)
    with contextlib.ExitStack() as stack:
        for i in range(CONCURRENCY):
            stack.enter_context(
                process(
                    [py, "manage.py", "rq-worker", "reports"], env, tmp / f"rq{i}.log", "Listening"
                )
            )
        results["platform: rq"] = platform_run("rq", env, tmp / "data", db, *sizes)

    import raw_tasks

    raw_tasks.app.conf.broker_url = REDIS_URL
    raw_celery = [py, "-m", "celery", "-A", "raw_tasks", "worker", "-Q", f"{prefix}raw"]
    with process(
        [*raw_celery, "-c", str(CONCURRENCY), "-l", "INFO"],
        raw_env,
        tmp / "raw-celery.log",
        " ready.",
    ):
        results["raw celery"] = raw_run(
            "raw celery (no API, no ledger)",
            *sizes,
            lambda sent: raw_tasks.celery_noop.apply_async((sent,), queue=f"{prefix}raw"),
            f"{prefix}raw:results",
        )
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue(f"{prefix}rawrq", connection=Redis.from_url(REDIS_URL), serializer=JSONSerializer)
    rq_cmd = [
        py,
        "-m",
        "rq.cli",
        "worker",
        "-u",
        REDIS_URL,
        "--serializer",
        "rq.serializers.JSONSerializer",
        f"{prefix}rawrq",
    ]
    rq_env = {**raw_env, "RAW_QUEUE": f"{prefix}rawrq"}
    with contextlib.ExitStack() as stack:
        for i in range(CONCURRENCY):
            stack.enter_context(process(rq_cmd, rq_env, tmp / f"raw-rq{i}.log", "Listening"))
        results["raw rq"] = raw_run(
            "raw rq (no API, no ledger)",
            *sizes,
            lambda sent: queue.enqueue("raw_jobs.rq_noop", sent),
            f"{prefix}rawrq:results",
        )
    return results


if __name__ == "__main__":
    main()
