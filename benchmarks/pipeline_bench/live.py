"""The ``live`` section: workers up first, then jobs enqueued in-process; end to end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import raw_tasks
from bench_support import load, wait_results
from rq import Queue as RqQueue
from rq.serializers import JSONSerializer

from pipeline_bench.harness import (
    CLIENTS,
    CONCURRENCY,
    RAW_RQ_CMD,
    RQ_SHARE,
    WAIT,
    WARMUP_JOBS,
    Bench,
    enqueue_dummies,
    ledger_span,
    platform_deps,
    platform_workers,
    rate,
    raw_celery_cmd,
    raw_rq_env,
    workers,
)


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
