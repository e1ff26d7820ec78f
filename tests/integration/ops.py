"""Helpers for the operations tests: API processes, scrapes, throwaway PostgreSQL and Redis.

Every process listens on 127.0.0.1 on a free port and every wait is bounded. The
throwaway PostgreSQL cluster and Redis server belong to the test that starts them, so it
may stop and restart them without touching the machine's shared services.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from app.db.housekeeping import SqlHousekeepingRepository
from app.db.repository import SqlJobRepository
from app.db.session import make_engine, make_sessions
from app.domain.jobs import ReportJob
from app.domain.ledger import JobFilter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url

from tests.conftest import ADMIN_URL
from tests.e2e.server import LiveServer, free_port, launch, stop
from tests.integration.workers import ROOT, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    response = httpx.get(url, timeout=10, headers=headers)
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (exact label set); 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over every sample whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without app settings or a metrics dir, plus ``extra``."""
    from tests.integration.workers import worker_env

    env = worker_env({}, **extra)
    if "PROMETHEUS_MULTIPROC_DIR" not in extra:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate"],
        cwd=ROOT,
        env=dict(env),
        check=True,
        timeout=120,
        capture_output=True,
    )


def start_api(env: Mapping[str, str], log_path: Path, *args: str) -> LiveServer:
    """``manage.py serve ARGS`` on a free port; returns once ``/health/live`` answers.

    Every API route is rate limited and tests poll in loops: the budget is out of reach
    unless ``env`` sets one.
    """
    full = {"RATE_LIMIT_REQUESTS": "1000000", **env, "HOST": "127.0.0.1", "PORT": str(free_port())}
    return launch(full, log_path, *args, probe="/health/live", timeout=40)


def stop_api(server: LiveServer, timeout: float = 30) -> int | None:
    return stop(server, timeout=timeout)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PgCluster:
    """A PostgreSQL cluster of its own in a temporary directory."""

    root: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(args), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "stop")


@contextmanager
def throwaway_postgres() -> Iterator[PgCluster]:
    """``initdb`` + ``pg_ctl start`` on a free port (as user postgres when run as root)."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert bindirs, "PostgreSQL server binaries not found under /usr/lib/postgresql"
    root = Path(tempfile.mkdtemp(prefix="pg-ops-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PgCluster(root, free_port(), bindirs[-1].parent)
    cluster._run(
        str(cluster.bindir / "initdb"),
        "-D",
        str(root / "data"),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
    )
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """A ``redis-server`` of its own (no persistence) that can be stopped and restarted."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10)

    def _answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- ledger


@contextmanager
def ledger_refused(database_url: str) -> Iterator[None]:
    """PostgreSQL refuses every connection to this database, and ends the open ones, until
    the block exits: a ledger outage for every process using it, the others untouched."""
    name = make_url(database_url).database
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
    try:
        yield
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


class Gate:
    """A trigger that holds matching writes to a ledger table until the test lets them go.

    A write matching ``when`` waits, inside its transaction, for an advisory lock the
    test holds: :meth:`wait_held` returns once a worker's write waits there; :meth:`fail`
    makes the ledger refuse connections and ends the held write first (it fails, its
    transaction rolled back), then every other connection, until the block exits.
    """

    def __init__(self, database_url: str, event: str, when: str) -> None:
        """``event``: e.g. ``UPDATE ON report_jobs``; ``when``: the trigger's condition."""
        self.name = make_url(database_url).database
        self._url = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._event, self._table = event, event.split(" ON ")[1]
        self._when = when
        self._key = int.from_bytes(os.urandom(4), "big") >> 1
        self._holder: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> Gate:
        trigger = f"gate_{self._key}"
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN PERFORM pg_advisory_xact_lock_shared({self._key}); RETURN NEW; END $$"
            )
            conn.execute(
                f"CREATE TRIGGER {trigger} BEFORE {self._event} "
                f"FOR EACH ROW WHEN ({self._when}) EXECUTE FUNCTION {trigger}()"
            )
        self._holder = psycopg.connect(self._url, autocommit=True)
        self._holder.execute("SELECT pg_advisory_lock(%s)", (self._key,))
        return self

    def __exit__(self, *_: object) -> None:
        trigger = f"gate_{self._key}"
        if self._holder is not None:
            with contextlib.suppress(psycopg.Error):
                self._holder.close()
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {self._table}")
            conn.execute(f"DROP FUNCTION IF EXISTS {trigger}()")

    def _held(self, admin: psycopg.Connection[tuple[object, ...]]) -> list[int]:
        rows = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
            (self._key,),
        ).fetchall()
        return [int(str(pid)) for (pid,) in rows]

    def wait_held(self, timeout: float) -> None:
        """Return once a write waits at the gate (fail after ``timeout`` seconds)."""
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            wait_until(lambda: bool(self._held(admin)), timeout)

    @contextmanager
    def fail(self) -> Iterator[None]:
        """The ledger's outage, beginning with the write held at the gate."""
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            for pid in self._held(admin):  # before the holder: the write must never go on
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )
        try:
            yield
        finally:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@contextmanager
def ledger(database_url: str) -> Iterator[SqlJobRepository]:
    """A repository on ``database_url`` for the test's own reads of the ledger."""
    engine = make_engine(database_url, pool_size=2, max_overflow=2)
    try:
        yield SqlJobRepository(engine)
    finally:
        engine.dispose()


def periodic_runs(
    database_url: str, task: str
) -> list[tuple[datetime, str, dict[str, Any] | None]]:
    """(slot, status, result) of ``task``'s runs as housekeeping recorded them, oldest first."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        return SqlHousekeepingRepository(make_sessions(engine)).runs(task)
    finally:
        engine.dispose()


def all_jobs(repo: SqlJobRepository) -> list[ReportJob]:
    """Every row of the ledger, newest first, through the repository's own paging."""
    jobs: list[ReportJob] = []
    cursor = None
    while True:
        page = repo.list_jobs(JobFilter(), limit=100, after=cursor)
        jobs.extend(page.items)
        if page.next is None:
            return jobs
        cursor = page.next
