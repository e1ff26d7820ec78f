"""The ledger's claim and outcome beside the leanest ways to run the same two statements.

A job's two worker-side transitions (the claim: ``queued`` → ``running``, conditional; the
outcome: ``running`` → ``completed``, fenced on the worker, durable), run for N fresh jobs
in each of three ways, in alternating rounds, on a fresh PostgreSQL database:

- **platform**: ``SqlJobRepository.transition`` (statements compiled once by SQLAlchemy,
  run on the driver's cursor of a pooled connection with the pool's events, the whole row
  read back into a ``ReportJob``: ``app.db.driver``);
- **psycopg, whole row**: the very statements the platform compiles, run on one psycopg
  connection held open (no pool, no SQLAlchemy), the row read into a ``ReportJob``;
- **psycopg, status only**: the same statements returning the status alone: the floor of
  the two round trips themselves, with no row to read back.

Prints the CPU and the wall time of this process a pair (claim + outcome), medians of the
rounds, and each way's CPU against the platform's. The server's own time is in the wall
time only.

    .venv/bin/python benchmarks/ledger_floor.py [--pairs 1000] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "benchmarks")]

from profile_ledger import scratch_database  # noqa: E402

Pair = Callable[[UUID], None]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000, help="jobs per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    with scratch_database() as url:
        env = {**os.environ, "DATABASE_URL": url}
        subprocess.run(
            [sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, check=True,
            capture_output=True,
        )  # fmt: skip
        report = measure(url, args.pairs, args.rounds)
    print(report)
    if args.out:
        args.out.write_text(report)


def measure(url: str, pairs: int, rounds: int) -> str:
    from app.db.job_rows import artifact_columns, to_job
    from app.db.repository import SqlJobRepository
    from app.db.session import make_engine
    from app.db.transitions import Shape, transition_statement
    from app.domain.jobs import Artifact, ReportJob
    from app.domain.params import DummyParams
    from app.domain.queues import ReportType
    from app.domain.states import JobStatus, sources_of

    engine = make_engine(url)
    repo = SqlJobRepository(engine)
    artifact = Artifact("k/1/x.json", "x.json", "application/json", 10, "ab" * 32)
    running = frozenset({JobStatus.RUNNING})
    claim = Shape(JobStatus.RUNNING, False, False, False, False, True)
    outcome = Shape(JobStatus.COMPLETED, False, True, False, True, True)
    compiled = {
        s: transition_statement(s).compile(dialect=engine.dialect) for s in (claim, outcome)
    }
    whole = {s: c.string for s, c in compiled.items()}
    status_only = {
        s: sql.rsplit(" RETURNING ", 1)[0] + " RETURNING status" for s, sql in whole.items()
    }
    # Every value but the job and the time, bound once: those the statements carry (the
    # target status...), then the claim's sources and worker, the outcome's fence and artifact.
    constant = {
        claim: {"sources": [s.value for s in sources_of(JobStatus.RUNNING)], "new_worker": "w:1"},
        outcome: {"sources": [JobStatus.RUNNING.value], "expected_worker": "w:1"}
        | {f"new_{c}": v for c, v in artifact_columns(artifact).items()},
    }
    bound = {s: {**c.params, **constant[s]} for s, c in compiled.items()}
    driver = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def platform(job_id: UUID) -> None:
        now = datetime.now(UTC)
        claimed = repo.transition(job_id, JobStatus.RUNNING, now=now, worker="w:1")
        assert claimed is not None
        done = repo.transition(
            job_id, JobStatus.COMPLETED, now=now, expected=running, expected_worker="w:1",
            artifact=artifact,
        )  # fmt: skip
        assert done is not None
        assert done.artifact == artifact

    def on_driver(sql: dict[Shape, str], read: bool) -> Pair:
        def run(shape: Shape, job_id: UUID, now: datetime) -> Any:
            cursor = driver.execute(sql[shape], {**bound[shape], "job_id": job_id, "now": now})
            row = cursor.fetchone()
            assert row is not None
            if read:
                names = [d.name for d in cursor.description or ()]
                return to_job(_Row(zip(names, row, strict=True)))
            return row

        def pair(job_id: UUID) -> None:
            now = datetime.now(UTC)
            run(claim, job_id, now)
            run(outcome, job_id, now)

        return pair

    ways: dict[str, Pair] = {
        "platform (pool, driver cursor, whole row)": platform,
        "psycopg, whole row": on_driver(whole, read=True),
        "psycopg, status only": on_driver(status_only, read=False),
    }

    def fresh(count: int) -> list[UUID]:
        now = datetime.now(UTC)
        ids = []
        for _ in range(count):
            job = ReportJob.new(
                report_type=ReportType.DUMMY, params=DummyParams(), max_attempts=3, now=now
            )
            repo.add(dataclasses.replace(job, status=JobStatus.QUEUED))
            ids.append(job.id)
        return ids

    for pair in ways.values():  # warm-up: connections, prepared statements
        for job_id in fresh(20):
            pair(job_id)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, pair in ways.items():
            ids = fresh(pairs)
            cpu, wall = time.process_time(), time.perf_counter()
            for job_id in ids:
                pair(job_id)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            samples[name].append((cpu * 1000 / pairs, wall * 1000 / pairs))
    driver.close()
    engine.dispose()
    return _table(samples, pairs, rounds)


class _Row(dict[str, Any]):
    """A row read by column name, as ``to_job`` reads one."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def _table(samples: dict[str, list[tuple[float, float]]], pairs: int, rounds: int) -> str:
    base = statistics.median(cpu for cpu, _ in samples[next(iter(samples))])
    lines = [
        f"Command: `python benchmarks/ledger_floor.py --pairs {pairs} --rounds {rounds}`",
        "",
        f"A claim and an outcome a pair, {pairs} fresh jobs per way and round, {rounds} "
        "alternating rounds; medians. CPU and wall of the calling process.",
        "",
        "| way | CPU ms a pair | wall ms a pair | CPU vs platform |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, runs in samples.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        lines.append(f"| {name} | {cpu:.3f} | {wall:.3f} | {cpu / base:.2f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
