"""The architecture document's comparison table, filled for sync, asyncio, inline, Celery, RQ.

For each backend it starts a real API (``manage.py serve``, ledger on PostgreSQL) forced
onto it (``DISPATCH_BACKEND``), with real workers for Celery (prefork, 2 processes) and RQ
(2 workers), then measures:

- API response latency: median and p95 of N ``POST /api/v1/reports/dummy`` sent one at a
  time, each a job doing ``--work`` seconds of rendering, and the status the answer carries;
- automatic retry: a job whose first attempt fails (``simulate_failures=1``) must end
  ``completed`` at attempt 2 with no caller action (backoff base 0.2 s);
- debugging: how many processes' logs hold the lines of one job;
- setup: the processes and services this run had to start.

Delivery guarantees are facts proved by tests, cited by name. About a minute in all.

    .venv/bin/python benchmarks/compare_dispatchers.py [--samples 30] [--work 0.2]
        [--out benchmarks/results/compare_dispatchers.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "backend"), str(HERE)]

from bench_support import pct, process  # noqa: E402

from tests.e2e.server import LiveServer, running, wait_for  # noqa: E402

ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
API = "/api/v1/reports"
CONTRACT = "tests/integration/test_contract.py"
WORKERS = 2

#: What each backend needs besides the API process, and the commands of those processes.
WORKER_COMMANDS: dict[str, list[list[str]]] = {
    "celery": [["celery_manager.py", "worker", "reports", str(WORKERS)]],
    "rq": [["manage.py", "rq-worker", "reports"]] * WORKERS,
}
READY = {"celery": " ready.", "rq": "Listening"}

#: Delivery guarantee of each backend, and the tests that prove it.
GUARANTEE = {
    "sync": "none beyond the ledger: the job is the request's; a crash mid-request leaves "
    "the row `running` until the next start-up re-runs it, by the lost-worker rule "
    f"(`{CONTRACT}::test_a_job_whose_worker_was_lost…[sync]`)",
    "asyncio": "none beyond the ledger: tasks die with the process; the next start-up "
    "re-runs their jobs (`tests/e2e/test_restart_recovery.py::"
    "test_killed_api_leaves_nothing_stuck[asyncio]`)",
    "inline": "none beyond the ledger: threads die with the process; the next start-up "
    "re-runs their jobs (`tests/e2e/test_restart_recovery.py::"
    "test_killed_api_leaves_nothing_stuck[inline]`)",
    "celery": "at-least-once, made once by the ledger's claim: a killed worker's job runs "
    "again (`tests/integration/test_worker_loss.py::"
    "test_killed_celery_child_job_runs_again_and_completes_once`)",
    "rq": "at-least-once, made once by the ledger's claim: a killed work horse's job runs "
    "again (`tests/integration/test_worker_loss.py::"
    "test_killed_rq_work_horse_job_runs_again_and_completes_once`)",
}
#: How each backend waits for a retry (the ledger's backoff decides when).
RETRY_MEANS = {
    "sync": "sleeps in the request (within DEFER_BUDGET_SECONDS)",
    "asyncio": "`asyncio.sleep` in the job's task",
    "inline": "a timer thread",
    "celery": "`self.retry(countdown)`",
    "rq": "RQ `Retry(interval)`",
}


@dataclass
class Row:
    backend: str
    latency_ms: list[float]
    answered: set[str]
    retry: str
    log_processes: int
    processes: int
    services: str


def measure(backend: str, server: LiveServer, samples: int, work: float, procs: int) -> Row:
    """Time ``samples`` enqueues one at a time, then check a retry and where logs land."""
    latency: list[float] = []
    answered: set[str] = set()
    with server.client(timeout=60) as http:
        for i in range(samples + 3):  # 3 warm-up requests: connections, first probes
            began = time.perf_counter()
            response = http.post(f"{API}/dummy", params={"processing_time": work, "seed": i})
            elapsed = (time.perf_counter() - began) * 1000
            response.raise_for_status()
            if i >= 3:
                latency.append(elapsed)
                answered.add(response.json()["status"])
        job_id = response.json()["id"]
        wait_for(http, job_id, timeout=60)
        began = time.perf_counter()
        failing = http.post(f"{API}/dummy", params={"simulate_failures": 1}).json()
        done = wait_for(http, failing["id"], timeout=60)
        took = time.perf_counter() - began
    retry = (
        f"yes: {RETRY_MEANS[backend]}; completed at attempt 2 in {took:.1f} s"
        if (done["status"], done["attempts"]) == ("completed", 2)
        else f"NO: ended {done['status']} at attempt {done['attempts']}"
    )
    logs = [server.log_path, *server.log_path.parent.glob(f"{backend}-worker-*.log")]
    holding = sum(1 for log in logs if job_id in log.read_text(errors="replace"))
    services = "the ledger" + (" + Redis (broker)" if backend in WORKER_COMMANDS else "")
    return Row(backend, latency, answered, retry, holding, procs, services)


def run_backend(backend: str, db: str, tmp: Path, args: argparse.Namespace) -> Row:
    extra = {
        "DISPATCH_BACKEND": backend,
        "INLINE_WORKERS": str(WORKERS),
        "REDIS_URL": REDIS_URL,
        "QUEUE_PREFIX": f"cmp{secrets.token_hex(3)}-",
        "LOG_LEVEL": "INFO",
    }
    data = tmp / backend
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(data, db, **extra))
        commands = WORKER_COMMANDS.get(backend, [])
        for i, command in enumerate(commands):
            log = data / f"{backend}-worker-{i}.log"
            argv = [sys.executable, *command]
            stack.enter_context(process(argv, server.env, log, READY[backend]))
        return measure(backend, server, args.samples, args.work, 1 + len(commands))


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of its own for the run, dropped afterwards."""
    name = f"cmp_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs. Latency: "
        f"{args.samples} `POST {API}/dummy` one at a time against a real API process, each "
        f"job rendering for {args.work} s; retry backoff base 0.2 s. {WORKERS} Celery pool "
        f"processes, {WORKERS} RQ workers, or {WORKERS} threads (inline pool, asyncio "
        "executor).",
        "",
        "| | " + " | ".join(r.backend for r in rows) + " |",
        "|---|" + "---|" * len(rows),
        "| API response latency, median / p95 ms | "
        + " | ".join(
            f"{statistics.median(r.latency_ms):.1f} / {pct(r.latency_ms, 0.95):.1f}" for r in rows
        )
        + " |",
        "| the answer says | " + " | ".join(", ".join(sorted(r.answered)) for r in rows) + " |",
        "| delivery guarantee | " + " | ".join(GUARANTEE[r.backend] for r in rows) + " |",
        "| automatic retry | " + " | ".join(r.retry for r in rows) + " |",
        "| setup: commands to run / services | "
        + " | ".join(f"{r.processes} / {r.services}" for r in rows)
        + " |",
        "| debugging: processes whose log holds a job's lines | "
        + " | ".join(str(r.log_processes) for r in rows)
        + " |",
        "",
        f"Every backend also passes the same contract (`{CONTRACT}`: same rows, same "
        "artifact sha256, retries, lost worker, ledger outage).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="enqueues timed per backend")
    parser.add_argument("--work", type=float, default=0.2, help="seconds each job renders")
    parser.add_argument("--backends", default="sync,asyncio,inline,celery,rq")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    began = time.monotonic()
    with scratch_database() as db, tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        rows = [run_backend(b, db, Path(tmp), args) for b in args.backends.split(",")]
    report = table(rows, args) + f"\n\nWhole run: {time.monotonic() - began:.0f} s."
    print(report)
    if args.out:
        command = "python benchmarks/compare_dispatchers.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# Dispatcher comparison\n\n`{command.strip()}`\n\n{report}\n")


if __name__ == "__main__":
    main()
