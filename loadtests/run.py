"""``make loadtest``: Locust (``loadtests/locustfile.py``) against the balanced stack.

Without ``--url``: for each replica count (``--replicas 1,2,3``) a fresh stack of
``tests/e2e/cluster.py`` — HAProxy with ``deploy/haproxy/haproxy.cfg`` in front of that many
production API replicas, the same workers each time (a Celery worker on ``reports``, one on
the other queues, an RQ worker), a fresh PostgreSQL database, Redis, moto S3 — then a short
warm-up, then Locust headless for ``--run-time`` seconds against the balancer. Around each
run it reads what every process kind spent in CPU (``/proc/<pid>/stat``: utime + stime of
the live processes of its tree, plus what they reaped: cutime + cstime), the ledger's
``pg_stat_database`` (commits), the WAL position, Redis's command count, and samples the
ledger's connections; after the run it waits for the workers to finish the backlog, so
that commits per job count the whole life of the jobs. ``pgbench`` (when installed) gives
this machine's PostgreSQL ceiling for comparison.

With ``--url URL`` (and ``--key`` or ``LOADTEST_API_KEY``, an operator key): one Locust run
against that URL; only the load generator's figures.

    .venv/bin/python loadtests/run.py [--replicas 1,2,3] [--users 30] [--run-time 35]
        [--url URL --key KEY] [--no-pgbench] [--out benchmarks/results/loadtest.md]

``make loadtest`` runs it with the defaults; ``make loadtest URL=... LOADTEST_API_KEY=...``
with ``--url`` (the report then goes to ``benchmarks/results/loadtest-url.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for shared in (ROOT, ROOT / "benchmarks"):  # tests/e2e/cluster.py, bench_support.py
    if str(shared) not in sys.path:
        sys.path.insert(0, str(shared))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402
from bench_support import cpu_model  # noqa: E402

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
TICK = os.sysconf("SC_CLK_TCK")
API = "/api/v1/reports"
UNFINISHED = ("pending", "queued", "running", "retrying")
#: The cluster's settings for load: no rate limit in the way (and the replicas log warnings
#: only: no log line per request).
LOAD = {"RATE_LIMIT_REQUESTS": "1000000", "RATE_LIMIT_WINDOW": "60"}


# --- /proc -------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    ppid: int
    comm: str
    cpu: float  # seconds: utime + stime + cutime + cstime


def processes() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        ticks = sum(int(v) for v in rest[11:15])
        table[int(entry.name)] = Proc(int(rest[1]), comm, ticks / TICK)
    return table


def tree(table: dict[int, Proc], roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found = {pid for pid in roots if pid in table}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    return []


def machine_busy() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


#: Each process kind: a function of the process table giving the roots of its trees.
Kinds = dict[str, Callable[[dict[int, Proc]], list[int]]]


def server_roots(name: str) -> Callable[[dict[int, Proc]], list[int]]:
    """Processes called ``name`` whose parent is not: a server and all it forked."""

    def roots(table: dict[int, Proc]) -> list[int]:
        return [
            pid
            for pid, proc in table.items()
            if proc.comm == name and table.get(proc.ppid, Proc(0, "", 0)).comm != name
        ]

    return roots


def cpu_by_kind(kinds: Kinds) -> dict[str, float]:
    table = processes()
    return {
        kind: sum(table[pid].cpu for pid in tree(table, roots(table)))
        for kind, roots in kinds.items()
    }


# --- the ledger and Redis ------------------------------------------------------------


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


#: Transactions this runner made on the ledger itself (one per LedgerSnapshot.read): left
#: out of the commit counts.
_OWN_COMMITS = [0]


@dataclass
class LedgerSnapshot:
    commits: int  # xact_commit, less this runner's own
    rollbacks: int
    wal: str
    jobs: dict[str, int]

    @classmethod
    def read(cls, database_url: str, admin_url: str) -> LedgerSnapshot:
        name = database_url.rsplit("/", 1)[1]
        # Read from another database: these queries are not counted among the ledger's.
        with psycopg.connect(plain(admin_url), autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, xact_rollback, pg_current_wal_lsn()::text"
                " FROM pg_stat_database WHERE datname = %s",
                (name,),
            ).fetchone()
        assert row is not None
        own = _OWN_COMMITS[0]
        with psycopg.connect(plain(database_url), autocommit=True) as conn:
            jobs = dict(conn.execute("SELECT status, count(*) FROM report_jobs GROUP BY 1"))
        _OWN_COMMITS[0] += 1
        return cls(row[0] - own, row[1], row[2], jobs)

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())

    @property
    def unfinished(self) -> int:
        return sum(self.jobs.get(s, 0) for s in UNFINISHED)


def wal_bytes(admin_url: str, before: str, after: str) -> int:
    with psycopg.connect(plain(admin_url), autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)::bigint", (after, before)).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def connection_peak(database_url: str, admin_url: str) -> Iterator[list[int]]:
    """Sample the ledger's connections every 0.5 s while inside; yields [peak]."""
    name = database_url.rsplit("/", 1)[1]
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(plain(admin_url), autocommit=True) as conn:
            while not done.wait(0.5):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
                ).fetchone()
                peak[0] = max(peak[0], int(row[0]) if row else 0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join(5)


def redis_commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


# --- Locust ----------------------------------------------------------------------------


@dataclass
class LocustRun:
    stats: list[dict[str, str]]
    failures: list[dict[str, str]]
    exit_code: int
    wall: float

    def aggregated(self) -> dict[str, str]:
        return next(row for row in self.stats if row["Name"] == "Aggregated")

    def routes(self) -> list[dict[str, str]]:
        return [row for row in self.stats if row["Name"] != "Aggregated"]


def locust(
    url: str, key: str, prefix: Path, args: argparse.Namespace, on_start: Callable[[int], None]
) -> LocustRun:
    command = [
        str(Path(sys.executable).parent / "locust"),
        *("-f", str(LOCUSTFILE), "--headless", "--host", url),
        *("--users", str(args.users), "--spawn-rate", str(args.spawn_rate)),
        *("--run-time", f"{args.run_time}s", "--csv", str(prefix)),
        *("--only-summary", "--loglevel", "WARNING"),
    ]
    env = {**os.environ, "LOADTEST_API_KEY": key}
    started = time.monotonic()
    with (prefix.parent / "locust.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        on_start(process.pid)
        code = process.wait(timeout=args.run_time + 60)
    wall = time.monotonic() - started

    def rows(suffix: str) -> list[dict[str, str]]:
        path = Path(f"{prefix}_{suffix}.csv")
        return list(csv.DictReader(path.open())) if path.exists() else []

    stats = rows("stats")
    if not stats:
        raise RuntimeError(
            f"Locust wrote no statistics:\n{(prefix.parent / 'locust.log').read_text()[-3000:]}"
        )
    return LocustRun(stats, rows("failures"), code, wall)


# --- one replica count -----------------------------------------------------------------


@dataclass
class Result:
    label: str
    replicas: int | None
    run: LocustRun
    load_before: str
    load_after: str
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    jobs_enqueued: int | None = None
    jobs_after: dict[str, int] = field(default_factory=dict)
    commits_run: int | None = None
    commits_total: int | None = None
    rollbacks_total: int | None = None
    wal: int | None = None
    redis: int | None = None
    connections: int | None = None
    drain: float | None = None
    commits_per_job_alone: float | None = None
    background_commits: float | None = None


def warm_up(url: str, key: str) -> list[str]:
    """A few of each request through the balancer (every replica gets some): imports,
    pools and caches are warm when Locust starts. Returns the jobs it enqueued."""
    headers = {"X-API-Key": key}

    def one(_: int) -> str:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            job = client.post(f"{API}/dummy", json={"processing_time": 0}).raise_for_status()
            job_id: str = job.json()["id"]
            client.get(f"{API}/jobs/{job_id}").raise_for_status()
            client.get(f"{API}/jobs", params={"limit": 20}).raise_for_status()
            client.get(f"{API}/queues/status").raise_for_status()
            return job_id

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(40)))


#: Jobs enqueued one after another, nothing else running, to count a job's own commits;
#: first, IDLE_SECONDS with no request count the workers' own commits (heartbeats...).
CALIBRATION_JOBS = 150
IDLE_SECONDS = 4.0


def commits_per_job(url: str, key: str, database_url: str, admin_url: str) -> tuple[float, float]:
    """(ledger commits/s with no request, commits of one dummy job from its POST to its
    completion with no reads, the idle rate taken out)."""
    idle = LedgerSnapshot.read(database_url, admin_url)
    time.sleep(IDLE_SECONDS)
    before = LedgerSnapshot.read(database_url, admin_url)
    background = (before.commits - idle.commits) / IDLE_SECONDS
    started = time.monotonic()
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        for _ in range(CALIBRATION_JOBS):
            client.post(f"{API}/dummy", json={"processing_time": 0}).raise_for_status()
    wait_drained(database_url, admin_url, 30)
    time.sleep(1.5)
    after = LedgerSnapshot.read(database_url, admin_url)
    spent = background * (time.monotonic() - started)
    jobs = after.total_jobs - before.total_jobs
    return background, (after.commits - before.commits - spent) / jobs


def wait_drained(database_url: str, admin_url: str, timeout: float) -> tuple[float, LedgerSnapshot]:
    started = time.monotonic()
    while True:
        snapshot = LedgerSnapshot.read(database_url, admin_url)
        if not snapshot.unfinished or time.monotonic() - started > timeout:
            return time.monotonic() - started, snapshot
        time.sleep(0.5)


def cluster_run(replicas: int, args: argparse.Namespace) -> Result:
    from tests.conftest import ADMIN_URL
    from tests.e2e.cluster import cluster

    base = ROOT / "data"
    base.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f"loadtest{replicas}-", dir=base) as scratch,
        cluster(Path(scratch), replicas=replicas, api={"LOG_LEVEL": "WARNING"}, **LOAD) as stack,
    ):
        data = Path(scratch)
        moto_port = stack.env["S3_ENDPOINT_URL"].rsplit(":", 1)[1]
        kinds: Kinds = {
            "API replicas": lambda _: [r.process.pid for r in stack.replicas],
            "HAProxy": lambda _: [stack.balancer.process.pid] if stack.balancer.process else [],
            "Celery workers": lambda _: [
                w.process.pid
                for n, w in stack.workers.items()
                if n.startswith("celery") and w.process
            ],
            "RQ worker": lambda _: [
                w.process.pid for n, w in stack.workers.items() if n == "rq" and w.process
            ],
            "PostgreSQL (whole server)": server_roots("postgres"),
            "Redis (whole server)": server_roots("redis-server"),
            "S3 (moto)": lambda table: [
                pid
                for pid in table
                if "moto.server" in (line := cmdline(pid)) and moto_port in line
            ],
        }
        warmed = warm_up(stack.url, stack.api_key)
        wait_drained(stack.database_url, ADMIN_URL, 30)
        time.sleep(1.5)  # pg_stat_database: backends report at most once a second
        background, alone = commits_per_job(stack.url, stack.api_key, stack.database_url, ADMIN_URL)
        before = LedgerSnapshot.read(stack.database_url, ADMIN_URL)
        redis_before = redis_commands(stack.env["REDIS_URL"])
        load_before = loadavg()
        cpu_before = cpu_by_kind(kinds)
        busy_before = machine_busy()
        children_cpu()  # from here, this process's waited-for children: Locust alone
        with connection_peak(stack.database_url, ADMIN_URL) as peak:
            run = locust(stack.url, stack.api_key, data / "locust", args, lambda _: None)
        busy = machine_busy() - busy_before
        cpu_after = cpu_by_kind(kinds)
        # Locust has exited: its seconds are in this process's rusage of its children.
        locust_cpu = children_cpu()
        load_after = loadavg()
        redis_after = redis_commands(stack.env["REDIS_URL"])
        time.sleep(1.1)
        end_of_run = LedgerSnapshot.read(stack.database_url, ADMIN_URL)
        drain, _ = wait_drained(stack.database_url, ADMIN_URL, args.drain)
        time.sleep(1.5)
        after = LedgerSnapshot.read(stack.database_url, ADMIN_URL)
        cpu = {k: cpu_after[k] - cpu_before[k] for k in kinds}
        cpu["Locust (load generator)"] = locust_cpu
        result = Result(
            f"{replicas} replica{'s' if replicas > 1 else ''}",
            replicas,
            run,
            load_before,
            load_after,
            cpu=cpu,
            busy=busy,
            jobs_enqueued=after.total_jobs - before.total_jobs,
            jobs_after={k: v - before.jobs.get(k, 0) for k, v in after.jobs.items()},
            commits_run=end_of_run.commits - before.commits,
            commits_total=after.commits - before.commits,
            rollbacks_total=after.rollbacks - before.rollbacks,
            wal=wal_bytes(ADMIN_URL, before.wal, after.wal),
            redis=redis_after - redis_before,
            connections=peak[0],
            drain=drain,
            commits_per_job_alone=alone,
            background_commits=background,
        )
        print(f"loadtest: {result.label}: {summary(result)} (warm-up {len(warmed)} jobs)")
        return result


_children_seen = [0.0]


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children since the last call."""
    usage = os.times()
    total = usage.children_user + usage.children_system
    spent, _children_seen[0] = total - _children_seen[0], total
    return spent


def url_run(args: argparse.Namespace) -> Result:
    key = args.key or os.environ.get("LOADTEST_API_KEY", "")
    if not key:
        sys.exit("loadtest: --url needs --key or LOADTEST_API_KEY (an operator key)")
    with tempfile.TemporaryDirectory(prefix="loadtest-") as scratch:
        load_before = loadavg()
        busy_before = machine_busy()
        children_cpu()
        run = locust(args.url, key, Path(scratch) / "locust", args, lambda _: None)
        busy = machine_busy() - busy_before
        result = Result(args.url, None, run, load_before, loadavg(), busy=busy)
        result.cpu = {"Locust (load generator)": children_cpu()}
    print(f"loadtest: {args.url}: {summary(result)}")
    return result


def summary(result: Result) -> str:
    total = result.run.aggregated()
    return (
        f"{float(total['Requests/s']):.0f} req/s, {total['Request Count']} requests, "
        f"{total['Failure Count']} failures, load {result.load_before} -> {result.load_after}"
    )


# --- pgbench --------------------------------------------------------------------------


def pgbench(admin_url: str, seconds: int) -> list[tuple[str, int, float]]:
    """This machine's PostgreSQL alone: (mode, clients, tps) in a scratch database."""
    if shutil.which("pgbench") is None:
        return []
    name = f"loadtest_pgbench_{os.getpid()}"
    base = plain(admin_url).rsplit("/", 1)[0]
    with psycopg.connect(plain(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    rows = []
    try:
        url = f"{base}/{name}"
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        for mode, flags in (("simple update (-N)", ["-N"]), ("select only (-S)", ["-S"])):
            for clients in (2, 8):
                done = subprocess.run(
                    ["pgbench", *flags, "-c", str(clients), "-j", "2", "-T", str(seconds), url],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                tps = re.search(r"tps = ([\d.]+)", done.stdout)
                rows.append((mode, clients, float(tps.group(1)) if tps else float("nan")))
    finally:
        with psycopg.connect(plain(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return rows


# --- the report ------------------------------------------------------------------------


def ms(row: dict[str, str], column: str) -> str:
    value = row.get(column, "N/A")
    return "—" if value in ("N/A", "") else f"{float(value):.0f}"


def versions() -> str:
    import importlib.metadata as md

    found = [f"Python {sys.version.split()[0]}"]
    for package in ("locust", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "celery", "rq"):
        with contextlib.suppress(md.PackageNotFoundError):
            found.append(f"{package} {md.version(package)}")
    for command in (["haproxy", "-v"], ["redis-server", "--version"], ["postgres", "--version"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
            found.append(" ".join(out.split()[:3]))
    return ", ".join(found)


def pg_settings(admin_url: str) -> str:
    names = ("server_version", "max_connections", "shared_buffers", "synchronous_commit", "fsync")
    with psycopg.connect(plain(admin_url), autocommit=True) as conn:
        values = [str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names]  # type: ignore[index]
    return ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True))


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    dirty = (
        " (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else ""
    )
    return git("rev-parse", "--short", "HEAD") + dirty


def report(
    results: list[Result],
    args: argparse.Namespace,
    *,
    command: str,
    started: datetime.datetime,
    wall: float,
    loads: tuple[str, str],
    bench: list[tuple[str, int, float]],
    pg: str,
) -> str:
    out = [
        "# Load test: the balanced stack under Locust",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; wall time of the run: {wall:.0f} s",
        f"- command: `{command}`",
        f"- git commit: {git_commit()}",
        f"- machine: nproc {os.cpu_count()}, {cpu_model()}; load average (1, 5, 15 min) "
        f"{loads[0]} at the start, {loads[1]} at the end",
        f"- versions: {versions()}",
    ]
    if pg:
        out.append(f"- PostgreSQL: {pg}")
    out += [
        f"- Locust: `--users {args.users} --spawn-rate {args.spawn_rate} --run-time "
        f"{args.run_time}s`, one process, FastHttpUser; mix and pacing in "
        "[loadtests/locustfile.py](../../loadtests/locustfile.py)",
        "",
    ]
    one = next((r for r in results if r.replicas == 1), None)
    base_rate = float(one.run.aggregated()["Requests/s"]) if one else None
    out += [
        "## Throughput",
        "",
        "| target | requests | req/s | ratio to 1 replica | failures | jobs enqueued | jobs/s "
        "| p50 ms | p95 ms | p99 ms | machine CPU busy | load before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        total = r.run.aggregated()
        rate = float(total["Requests/s"])
        ratio = f"{rate / base_rate:.2f}×" if base_rate and r.replicas else "—"
        jobs = "—" if r.jobs_enqueued is None else str(r.jobs_enqueued)
        jobs_rate = "—" if r.jobs_enqueued is None else f"{r.jobs_enqueued / args.run_time:.1f}"
        cores = os.cpu_count() or 1
        busy = f"{100 * r.busy / (r.run.wall * cores):.0f}% of {cores} cores"
        out.append(
            f"| {r.label} | {total['Request Count']} | {rate:.0f} | {ratio} "
            f"| {total['Failure Count']} | {jobs} | {jobs_rate} | {ms(total, '50%')} "
            f"| {ms(total, '95%')} | {ms(total, '99%')} | {busy} "
            f"| {r.load_before} → {r.load_after} |"
        )
    out += [
        "",
        "## Per route",
        "",
        "| target | method | route | requests | req/s | failures | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for row in r.run.routes():
            out.append(
                f"| {r.label} | {row['Type']} | `{row['Name']}` | {row['Request Count']} "
                f"| {float(row['Requests/s']):.1f} | {row['Failure Count']} | {ms(row, '50%')} "
                f"| {ms(row, '95%')} | {ms(row, '99%')} |"
            )
    failures = [(r.label, f) for r in results for f in r.run.failures]
    if failures:
        out += ["", "Failures:", ""]
        out += [
            f"- {label}: {f['Method']} `{f['Name']}` × {f['Occurrences']}: {f['Error'][:200]}"
            for label, f in failures
        ]
    kinds = list(dict.fromkeys(k for r in results for k in r.cpu))
    out += [
        "",
        "## CPU seconds during the run",
        "",
        f"Over the {args.run_time} s of Locust (× {os.cpu_count()} cores = "
        f"{args.run_time * (os.cpu_count() or 1)} CPU s available); ms/request = CPU ms per "
        "request Locust made.",
        "",
        "| process kind | " + " | ".join(r.label for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def cell(r: Result, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        requests = int(r.run.aggregated()["Request Count"]) or 1
        return f"{seconds:.1f} s ({1000 * seconds / requests:.2f} ms/req)"

    for kind in kinds:
        out.append(f"| {kind} | " + " | ".join(cell(r, r.cpu.get(kind)) for r in results) + " |")
    out.append(
        "| **machine, all processes** | " + " | ".join(cell(r, r.busy) for r in results) + " |"
    )
    out.append(
        "| other processes (machine − the kinds above) | "
        + " | ".join(cell(r, r.busy - sum(r.cpu.values())) for r in results)
        + " |"
    )
    ledger = [r for r in results if r.commits_total is not None]
    if ledger:
        out += [
            "",
            "## Ledger (PostgreSQL) and Redis",
            "",
            "Commits are the cluster database's `pg_stat_database.xact_commit` (every "
            'transaction of the API replicas and the workers, reads included); "run" = the '
            'Locust run, "+ drain" = until the workers had finished the jobs it enqueued; '
            f'"alone" = {CALIBRATION_JOBS} dummy jobs POSTed one after another before the '
            "run, nothing else running, until they completed: a job's own commits, enqueue "
            "to completion, with no poll, list or download, less the idle rate; "
            f'"idle" = the commits of {IDLE_SECONDS:.0f} s with no request just before '
            "(the workers' and replicas' own).",
            "",
            "| target | commits in the run | commits/s | commits per request "
            "| commits per job (run + drain) | commits per job alone | idle commits/s "
            "| rollbacks | WAL KiB per job "
            "| peak ledger connections | Redis commands per request | jobs after the drain "
            "| drain s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in ledger:
            requests = int(r.run.aggregated()["Request Count"]) or 1
            jobs = r.jobs_enqueued or 1
            assert r.commits_run is not None
            assert r.commits_total is not None
            states = ", ".join(f"{k} {v}" for k, v in sorted(r.jobs_after.items()) if v)
            out.append(
                f"| {r.label} | {r.commits_run} | {r.commits_run / args.run_time:.0f} "
                f"| {r.commits_run / requests:.2f} | {r.commits_total / jobs:.2f} "
                f"| {r.commits_per_job_alone:.2f} | {r.background_commits:.1f} "
                f"| {r.rollbacks_total} | {(r.wal or 0) / 1024 / jobs:.1f} | {r.connections} "
                f"| {(r.redis or 0) / requests:.2f} | {states} | {r.drain:.1f} |"
            )
    if bench:
        out += [
            "",
            "## This machine's PostgreSQL alone (pgbench)",
            "",
            "`pgbench -i -s 10`, then each mode for "
            f"{args.pgbench_seconds} s with `-j 2`, before the stacks start, nothing else of "
            "this run running; every transaction is one commit.",
            "",
            "| mode | clients | transactions/s |",
            "|---|---:|---:|",
        ]
        out += [f"| {mode} | {clients} | {tps:.0f} |" for mode, clients, tps in bench]
    out += [
        "",
        "## How it is measured",
        "",
        "- Each replica count runs on a fresh stack (`tests/e2e/cluster.py`): HAProxy with "
        "`deploy/haproxy/haproxy.cfg` (local listener, one `server` per replica), production "
        "replicas of `manage.py serve` (one uvicorn process each, `LOG_LEVEL=WARNING`, "
        "`RATE_LIMIT_REQUESTS=1000000`), a Celery worker on `reports` and one on "
        "`documents,notifications,celery` (one process each), an RQ worker on every queue "
        "(workers log at INFO), a fresh PostgreSQL database, Redis, moto S3; the same "
        "machine runs Locust.",
        "- Before Locust: 40 warm-up rounds through the balancer (enqueue, poll, list, queue "
        "status; 4 at a time), then the workers drain them.",
        "- Requests/s and percentiles are Locust's (its CSV; percentiles rounded by Locust "
        "to 2 significant digits); a failure is a non-2xx answer or a transport error.",
        "- CPU: for each kind, utime + stime of its live processes plus cutime + cstime "
        "(what they reaped: RQ work horses, ended backends) from `/proc/<pid>/stat`, "
        "before and after the run; PostgreSQL and Redis are whole servers (another "
        "database's backends would count too: see the load average). Machine = "
        "`/proc/stat` minus idle and iowait. Locust's seconds are its rusage.",
        "- Jobs enqueued = new ledger rows; an Idempotency-Key replay adds none.",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, in turn")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--spawn-rate", type=float, default=30)
    parser.add_argument("--run-time", type=int, default=35, help="seconds of each run")
    parser.add_argument("--drain", type=float, default=60, help="seconds to wait for jobs")
    parser.add_argument("--url", help="one run against this URL instead of local stacks")
    parser.add_argument("--key", help="operator API key for --url (or LOADTEST_API_KEY)")
    parser.add_argument("--no-pgbench", dest="pgbench", action="store_false")
    parser.add_argument("--pgbench-seconds", type=int, default=8)
    parser.add_argument(
        "--out",
        type=Path,
        help="default: benchmarks/results/loadtest.md (with --url: loadtest-url.md)",
    )
    args = parser.parse_args()
    if args.out is None:
        name = "loadtest-url.md" if args.url else "loadtest.md"
        args.out = ROOT / "benchmarks" / "results" / name

    shown = [
        "KEY" if previous == "--key" else arg
        for previous, arg in zip(["", *sys.argv[1:]], sys.argv[1:], strict=False)
    ]  # the key never reaches the report
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "loadtests/run.py", *shown])
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    load_start = loadavg()
    bench: list[tuple[str, int, float]] = []
    pg = ""
    if args.url:
        results = [url_run(args)]
    else:
        from tests.conftest import ADMIN_URL

        pg = pg_settings(ADMIN_URL)
        if args.pgbench:
            bench = pgbench(ADMIN_URL, args.pgbench_seconds)
        results = [cluster_run(int(n), args) for n in args.replicas.split(",")]
    text = report(
        results,
        args,
        command=command,
        started=started,
        wall=time.monotonic() - clock,
        loads=(load_start, loadavg()),
        bench=bench,
        pg=pg,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"loadtest: wrote {args.out}")


if __name__ == "__main__":
    main()
