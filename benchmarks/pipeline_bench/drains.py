"""The ``celery`` and ``rq`` sections: drains of a backlog enqueued with no worker running."""

from __future__ import annotations

import subprocess
import time

import psycopg
import raw_tasks
from app import bootstrap
from app.domain.queues import Backend
from bench_support import wait_results, wait_until
from celery import Celery
from profile_ledger import parallel_rate
from rq import Queue as RqQueue
from rq.serializers import JSONSerializer

from pipeline_bench.harness import (
    CLIENTS,
    CONCURRENCY,
    RAW_RQ_CMD,
    RQ_SHARE,
    WAIT,
    Bench,
    enqueue_dummies,
    ledger_span,
    platform_deps,
    platform_workers,
    purge_celery,
    rate,
    raw_celery_cmd,
    raw_rq_env,
    workers,
)


def celery_drain(b: Bench) -> None:
    jobs = b.args.jobs
    b.figures["celery_drain.raw"] = raw_celery_drain(b, f"{b.prefix}rawcelery", jobs, None)
    backend = "db+" + b.db
    Celery("tables", backend=backend, set_as_current=False).backend  # noqa: B018 (creates them)
    b.figures["celery_drain.pg"] = raw_celery_drain(b, f"{b.prefix}rawpg", jobs, backend)
    b.figures["celery_drain.platform"] = platform_drain(b, "celery", jobs)
    b.figures["celery_drain.ceiling"] = ledger_ceiling(b, jobs)
    # What a pipeline that only added the two costs would drain: R and L in series.
    b.figures["celery_drain.bound"] = additive_bound(
        b.figures["celery_drain.raw"], b.figures["celery_drain.ceiling"]
    )


def additive_bound(raw: float, ledger: float) -> float:
    """``1 / (1/R + 1/L)``: jobs/s if each job cost raw Celery's time plus the ledger's."""
    return 1 / (1 / raw + 1 / ledger)


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
