"""Profile the ledger path in-process: ``enqueue_report`` (Celery forced) and ``run_report``.

Creates a fresh PostgreSQL database, migrates it, enqueues N dummy jobs through the
platform's own service (publishing to a throw-away Celery queue on Redis, purged after),
then runs each one with ``run_report`` in this process, as a worker would. Prints the
milliseconds per job of each step and the top of a cProfile of each, sorted by
cumulative time; ``--out DIR`` also writes the profiles there. Last, the same number of
jobs run in two forked processes with no broker: the most a 2-process worker could drain.

    .venv/bin/python benchmarks/profile_ledger.py [--jobs 300] [--out benchmarks/profiles]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "benchmarks")]

from app.domain.queues import Backend  # noqa: E402
from bench_support import scratch_dir  # noqa: E402

ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"profile_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def profiled(label: str, count: int, step: Callable[[int], None], top: int) -> str:
    """Run ``step(i)`` for i < count under cProfile; the ms per call and the top rows."""
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    for i in range(count):
        step(i)
    profile.disable()
    per_call = (time.perf_counter() - began) * 1000 / count
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
    body = "\n".join(line for line in out.getvalue().splitlines() if line.strip())
    return f"## {label}: {per_call:.2f} ms a job ({count} jobs, under cProfile)\n\n{body}\n"


def timed(count: int, step: Callable[[int], None]) -> tuple[float, float]:
    """Milliseconds a call of ``step``: wall time, and this process's CPU time."""
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        step(i)
    return (
        (time.perf_counter() - began) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
    )


def parallel_rate(worker: Any, ids: list[Any], processes: int) -> float:
    """Jobs a second of ``run_report`` over ``ids`` in ``processes`` forked processes, no
    broker between them: the ceiling of a worker pool of that size."""
    from app.services.run_report import run_report

    def drain(share: list[Any]) -> None:
        worker.after_fork(Backend.CELERY)
        for job_id in share:
            run_report(deps=worker.deps, job_id=job_id)
        os._exit(0)

    began = time.perf_counter()
    children = []
    for k in range(processes):
        pid = os.fork()
        if pid == 0:
            drain(ids[k::processes])
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return len(ids) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="write enqueue.txt and run_report.txt here")
    parser.add_argument("--label", default="", help="suffix of the written files (_before...)")
    args = parser.parse_args()
    prefix = f"prof{secrets.token_hex(3)}-"
    with scratch_database() as db, scratch_dir("profile-") as tmp:
        env = {
            "DATABASE_URL": db,
            "DATA_DIR": tmp,
            "REDIS_URL": REDIS_URL,
            "QUEUE_PREFIX": prefix,
            "DISPATCH_BACKEND": "celery",
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate"],
            cwd=ROOT,
            env={**os.environ},
            check=True,
            capture_output=True,
        )
        from app import bootstrap
        from app.core.config import get_settings
        from app.domain.queues import ReportType
        from app.services.enqueue import enqueue_report
        from app.services.run_report import run_report

        logging.disable(logging.WARNING)  # no consumer here: the no-worker warning is noise
        api = bootstrap.build(get_settings())
        worker = bootstrap.build_worker(Backend.CELERY, get_settings())
        ids = []

        def enqueue(_: int) -> None:
            ids.append(
                enqueue_report(deps=api.deps, report_type=ReportType.DUMMY, params={}).job.id
            )

        def run(i: int) -> None:
            outcome = run_report(deps=worker.deps, job_id=ids[i])
            assert outcome.kind == "completed", outcome

        try:
            for i in range(30):  # warm-up: connections, statement caches, broker probes
                enqueue(i)
                run(i)
            ids.clear()
            enqueue_ms = timed(args.jobs, enqueue)
            run_ms = timed(args.jobs, lambda i: run(i))
            ids.clear()
            reports = [
                profiled("enqueue_report (Celery)", args.jobs, enqueue, args.top),
                profiled("run_report (dummy)", args.jobs, run, args.top),
            ]
            ids.clear()
            for i in range(args.jobs):
                enqueue(i)
            ceiling = parallel_rate(worker, ids, 2)
        finally:
            purge = api.brokers[0] if api.brokers else None
            if purge is not None:
                with purge.app.connection_for_write() as conn:  # type: ignore[attr-defined]
                    for queue in ("reports", "documents", "notifications", "celery"):
                        conn.default_channel.queue_purge(f"{prefix}{queue}")
            api.close()
            worker.close()
    summary = (
        f"enqueue_report: {enqueue_ms[0]:.2f} ms a job (CPU {enqueue_ms[1]:.2f}); "
        f"run_report: {run_ms[0]:.2f} ms a job (CPU {run_ms[1]:.2f}) "
        f"({args.jobs} dummy jobs, PostgreSQL ledger, Redis broker, no profiler); "
        f"run_report in 2 forked processes, no broker: {ceiling:.0f} jobs/s\n"
    )
    print(summary)
    for report in reports:
        print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, report in zip(("enqueue", "run_report"), reports, strict=True):
            (args.out / f"{name}{args.label}.txt").write_text(summary + "\n" + report)


if __name__ == "__main__":
    main()
