"""The ``enqueue`` section: ms per in-process enqueue, the platform's and raw Celery's."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import raw_tasks
from app.domain.queues import ReportType
from app.services.enqueue import enqueue_report
from bench_support import load

from pipeline_bench.harness import (
    ENQUEUE_CALLS,
    ENQUEUE_WARMUP,
    Bench,
    platform_deps,
    purge_celery,
    say,
)


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
