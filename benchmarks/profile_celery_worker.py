"""Profile a Celery pool process: where a job's time goes, and what Celery adds between jobs.

One pool process (``-c 1``) drains N jobs, in turn with raw Celery (``raw_tasks``' no-op on
the same Redis, same ``acks_late`` and prefetch 1) and with the platform's own worker
(``celery_manager.py worker reports 1``, dummy jobs on a fresh PostgreSQL ledger), ``--rounds``
times each. For each drain it prints the median of:

- **task**: one task in the pool process (raw: start to end of the no-op's body; platform:
  ``task_prerun`` to ``task_postrun``);
- **between**: from one task's end to the next one's start in the same process: the ack,
  the next message fetched and handed to the child by the worker's main process;
- **ledger**: the platform's claim-to-outcome span (``finished_at - started_at``);

and the CPU a job costs each process of the machine that takes part (the worker's main
process, its pool process, PostgreSQL's processes, Redis; from ``/proc``, from the tenth job
done to the last). Both drains are CPU-bound on this machine: jobs a second ≈ cores ÷ CPU a job.

With ``--profile FILE``, the platform's pool process of the last round runs under cProfile
and the top of its profile goes to FILE.

    .venv/bin/python benchmarks/profile_celery_worker.py [--jobs 500] [--rounds 2] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "benchmarks")]

from bench_support import process, scratch_dir, wait_until  # noqa: E402
from profile_ledger import REDIS_URL, scratch_database  # noqa: E402

PY = sys.executable


def run_worker(marks: str, profile: bool) -> None:
    """In the worker's process: ``celery_manager.py worker reports 1``; its pool process
    writes its task start and end times (and its cProfile) next to ``marks``."""
    from celery import signals

    times: list[float] = []
    profiler = cProfile.Profile()

    @signals.worker_process_init.connect(weak=False)
    def _started(**_: Any) -> None:
        if profile:
            profiler.enable()

    @signals.task_prerun.connect(weak=False)
    @signals.task_postrun.connect(weak=False)
    def _mark(**_: Any) -> None:
        times.append(time.perf_counter())

    @signals.worker_process_shutdown.connect(weak=False)
    def _ended(**_: Any) -> None:
        profiler.disable()
        Path(marks).write_text(json.dumps(times))
        if profile:
            profiler.dump_stats(f"{marks}.prof")

    from app.cli import celery_manager

    sys.exit(celery_manager.main(["worker", "reports", "1"]))


def medians(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """Median ms of a task (start, end) and between one's end and the next one's start."""
    spans = sorted(spans)
    task = [(end - start) * 1000 for start, end in spans]
    between = [(spans[i + 1][0] - spans[i][1]) * 1000 for i in range(len(spans) - 1)]
    return statistics.median(task), statistics.median(between)


def cpu_seconds(worker: int) -> dict[str, float]:
    """CPU seconds used so far by the worker's main process, its pool processes, every
    PostgreSQL process and Redis, read from ``/proc``."""
    roles: dict[str, float] = dict.fromkeys(ROLES, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        pid, rest = int(stat.parent.name), text[text.rindex(")") + 2 :].split()
        comm = text[text.index("(") + 1 : text.rindex(")")]
        role = (
            "worker main"
            if pid == worker
            else "pool process"
            if int(rest[1]) == worker
            else "postgres"
            if comm.startswith("postgres")
            else "redis"
            if comm.startswith("redis-server")
            else None
        )
        if role is not None:
            roles[role] += (int(rest[11]) + int(rest[12])) / tick
    return roles


ROLES = ("worker main", "pool process", "postgres", "redis")


def drain(
    cmd: list[str], env: dict[str, str], done: Callable[[], int], jobs: int, log: Path
) -> str:
    """Run the worker ``cmd`` (its output to ``log``) until ``done()`` reaches ``jobs``, then
    stop it warmly; return the CPU a job cost each role from the tenth job done to the last."""
    with process(cmd, env, log, ready=lambda: True) as worker:
        wait_until(lambda: done() >= jobs // 10, 300, f"{cmd} starts", every=0.05, watch=[worker])
        first, before = done(), cpu_seconds(worker.pid)
        wait_until(lambda: done() >= jobs, 300, f"drain by {cmd}", every=0.2, watch=[worker])
        after = cpu_seconds(worker.pid)
    per_job = {r: (after[r] - before[r]) * 1000 / (jobs - first) for r in ROLES}
    parts = ", ".join(f"{r} {ms:.2f}" for r, ms in per_job.items())
    return f"CPU ms a job: {parts}; all {sum(per_job.values()):.2f}"


def raw_round(jobs: int, env: dict[str, str], tmp: str) -> str:
    from redis import Redis

    queue = f"rawcpu{secrets.token_hex(3)}"
    os.environ.update(RAW_REDIS_URL=REDIS_URL, RAW_QUEUE=queue)
    import raw_tasks

    for _ in range(jobs):
        raw_tasks.celery_noop.apply_async((time.time(),), queue=queue)
    client = Redis.from_url(REDIS_URL)
    results = f"{queue}:results"
    cmd = [PY, "-m", "celery", "-A", "raw_tasks", "worker", "-Q", queue, "-c", "1"]
    cpu = drain(
        [*cmd, "-P", "prefork", "-l", "WARNING", "-n", f"{queue}@%h"],
        {**env, "RAW_REDIS_URL": REDIS_URL, "RAW_QUEUE": queue},
        lambda: client.llen(results),
        jobs,
        Path(tmp, f"{queue}.log"),
    )
    spans = [tuple(json.loads(r))[1:] for r in client.lrange(results, 0, -1)]
    client.delete(results)
    task, between = medians(spans)  # type: ignore[arg-type]
    return f"raw Celery: task {task:.2f} ms, between {between:.2f} ms\n  {cpu}"


def platform_round(jobs: int, env: dict[str, str], tmp: str, profile: Path | None) -> str:
    from app import bootstrap
    from app.core.config import get_settings
    from app.domain.queues import ReportType
    from app.services.enqueue import enqueue_report

    api = bootstrap.build(get_settings())
    for _ in range(jobs):
        enqueue_report(deps=api.deps, report_type=ReportType.DUMMY, params={})
    marks = os.path.join(tmp, f"marks-{secrets.token_hex(3)}")
    code = f"import profile_celery_worker as p; p.run_worker({marks!r}, {profile is not None})"
    sql = "SELECT count(*) FROM report_jobs WHERE status = 'completed'"

    def completed() -> int:
        with api.engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())

    cpu = drain([PY, "-c", code], env, completed, jobs, Path(f"{marks}.log"))
    with api.engine.begin() as conn:
        ledger = conn.exec_driver_sql(
            "SELECT percentile_cont(0.5) WITHIN GROUP "
            "(ORDER BY EXTRACT(EPOCH FROM finished_at - started_at)) FROM report_jobs"
        ).scalar_one()
        conn.exec_driver_sql("DELETE FROM report_jobs")
    api.close()
    times = json.loads(Path(marks).read_text())
    task, between = medians(list(zip(times[::2], times[1::2], strict=True)))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(f"{marks}.prof", stream=out).sort_stats("cumulative").print_stats(40)
        profile.write_text("\n".join(line for line in out.getvalue().splitlines() if line))
    return (
        f"platform:   task {task:.2f} ms, between {between:.2f} ms, "
        f"ledger claim to outcome {float(ledger) * 1000:.2f} ms\n  {cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="write the platform's profile here")
    args = parser.parse_args()
    with scratch_database() as db, scratch_dir("celery-cpu-") as tmp:
        os.environ.update(
            DATABASE_URL=db,
            DATA_DIR=tmp,
            REDIS_URL=REDIS_URL,
            QUEUE_PREFIX=f"cpu{secrets.token_hex(3)}-",
            DISPATCH_BACKEND="celery",
            ENVIRONMENT="development",
            LOG_LEVEL="WARNING",
            METRICS_PORT="0",
            CELERY_MAX_TASKS_PER_CHILD=str(args.jobs * 2),  # one pool process all along
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])}
        subprocess.run([PY, "manage.py", "migrate"], cwd=ROOT, env=env, check=True)
        logging.disable(logging.WARNING)  # no worker yet: the no-worker warning is noise
        print(f"{args.jobs} jobs a drain, one pool process, medians")
        for i in range(args.rounds):
            print(raw_round(args.jobs, env, tmp), flush=True)
            last = i == args.rounds - 1
            print(platform_round(args.jobs, env, tmp, args.profile if last else None), flush=True)


if __name__ == "__main__":
    main()
