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
import logging
import os
import secrets
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psycopg
import raw_tasks
from app.core.logging import JsonFormatter
from bench_support import scratch_dir
from pipeline_bench.drains import celery_drain, rq_drain
from pipeline_bench.enqueue import enqueue
from pipeline_bench.harness import ADMIN, BEGAN, PY, REDIS_URL, ROOT, RQ_SHARE, SECTIONS, Bench, say
from pipeline_bench.http import http
from pipeline_bench.live import live
from pipeline_bench.report import report
from redis import Redis

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
