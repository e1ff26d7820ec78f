"""Profile RQ work horses: where a job's time goes in the fork that runs it.

Creates a fresh PostgreSQL database, enqueues N dummy jobs on RQ (Redis), then runs the
platform's own RQ worker (``manage.py rq-worker``, burst mode, one worker) in a child process
whose work horses each run ``perform_job`` under cProfile. Prints the wall time of the
drain from the ledger (first start to last finish, profiled) and the merged profile of
every horse, sorted by cumulative time; ``--out FILE`` also writes it there.

    .venv/bin/python benchmarks/profile_rq_horse.py [--jobs 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import io
import logging
import os
import pstats
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "benchmarks")]

from bench_support import scratch_dir  # noqa: E402
from profile_ledger import REDIS_URL, scratch_database  # noqa: E402


def run_worker(profiles: str) -> None:
    """In the worker's process: ``manage.py rq-worker reports --burst``, each horse's
    ``perform_job`` profiled into ``profiles``."""
    from app.cli import manage
    from app.cli.rq_worker import ReportWorker

    perform = ReportWorker.perform_job

    def profiled(self: ReportWorker, job: Any, queue: Any) -> bool:
        profile = cProfile.Profile()
        profile.enable()
        try:
            return perform(self, job, queue)
        finally:
            profile.disable()
            profile.dump_stats(os.path.join(profiles, f"{os.getpid()}.prof"))

    ReportWorker.perform_job = profiled  # type: ignore[method-assign]
    sys.exit(manage.main(["rq-worker", "reports", "--burst"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with scratch_database() as db, scratch_dir("horse-") as tmp:
        os.environ.update(
            DATABASE_URL=db,
            DATA_DIR=tmp,
            REDIS_URL=REDIS_URL,
            QUEUE_PREFIX=f"horse{secrets.token_hex(3)}-",
            DISPATCH_BACKEND="rq",
            ENVIRONMENT="development",
            LOG_LEVEL="WARNING",
            METRICS_PORT="0",
        )
        here = os.pathsep.join(sys.path[:2])  # backend/ and benchmarks/, for the worker
        env = {**os.environ, "PYTHONPATH": here}
        subprocess.run([sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, check=True)
        from app import bootstrap
        from app.core.config import get_settings
        from app.domain.queues import ReportType
        from app.services.enqueue import enqueue_report

        logging.disable(logging.WARNING)  # no worker yet: the no-worker warning is noise
        api = bootstrap.build(get_settings())
        for _ in range(args.jobs):
            enqueue_report(deps=api.deps, report_type=ReportType.DUMMY, params={})
        profiles = os.path.join(tmp, "profiles")
        os.mkdir(profiles)
        code = f"import profile_rq_horse; profile_rq_horse.run_worker({profiles!r})"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
        with api.engine.connect() as conn:
            span = conn.exec_driver_sql(
                "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) "
                "FROM report_jobs WHERE status = 'completed'"
            ).one()
        api.close()
        files = glob.glob(os.path.join(profiles, "*.prof"))
        out = io.StringIO()
        pstats.Stats(*files, stream=out).sort_stats("cumulative").print_stats(args.top)
        body = "\n".join(
            line for line in out.getvalue().splitlines() if line.strip() and ".prof" not in line
        )
        report = (
            f"{span[0]} of {args.jobs} dummy jobs completed in {float(span[1]):.2f} s by one "
            f"RQ worker, every horse under cProfile ({len(files)} horses profiled)\n\n{body}\n"
        )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
