"""The bench's report: the figures against their targets, the HTTP table, the legend."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version

from bench_support import cpu_model, scratch_note

from pipeline_bench.harness import (
    CLIENTS,
    CONCURRENCY,
    ENQUEUE_CALLS,
    ENQUEUE_WARMUP,
    RATE_LIMIT,
    RQ_SHARE,
    WARMUP_JOBS,
    Bench,
)
from pipeline_bench.http import HTTP_ROUNDS, SETTLE_SECONDS


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
        "Celery drain, jobs/s — vs the additive bound 1/(1/R + 1/L)",
        "celery_drain.platform",
        "celery_drain.bound",
        "{:.0f}",
        "≥ 0.9×",
        lambda p, q: p / q >= 0.9,
    ),
    Row(
        "Ledger alone (L): run_report in 2 processes, no broker, jobs/s — vs raw Celery (R)",
        "celery_drain.ceiling",
        "celery_drain.raw",
        "{:.0f}",
        "≥ 0.8×",
        lambda p, q: p / q >= 0.8,
    ),
    Row(
        "Celery drain, jobs/s — vs raw Celery prefork (R)",
        "celery_drain.platform",
        "celery_drain.raw",
        "{:.0f}",
    ),
    Row(
        "Celery drain, jobs/s — vs Celery + PostgreSQL result backend",
        "celery_drain.platform",
        "celery_drain.pg",
        "{:.0f}",
    ),
    Row(
        "RQ drain, jobs/s — vs raw RQ, same worker class",
        "rq_drain.platform",
        "rq_drain.raw",
        "{:.0f}",
        "≥ 0.9×",
        lambda p, q: p / q >= 0.9,
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
  worker could drain while every job keeps its claim and outcome commits. The additive
  bound `1/(1/R + 1/L)` (R raw Celery, L ledger alone) is what the platform would drain
  if a job cost exactly raw Celery's time plus the ledger's: the Celery drain's anchor.
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
        "- CPU ms to create a file or folder (a dummy job creates three; scratch folder "
        f"first): {scratch_note()}",
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
