"""Enqueue throughput and latency through the HTTP API (inline backend).

Starts a real API process (``manage.py serve``) on SQLite and on PostgreSQL, sends N
enqueue requests from C concurrent clients on loopback, and prints requests per second
and p50/p99 latency of ``POST /api/v1/reports/dummy``, plus the time until every job
is completed (end-to-end throughput of the inline pool).

    .venv/bin/python benchmarks/api_throughput.py [--requests 500] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "backend")]

from tests.e2e.server import LiveServer, running  # noqa: E402

ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load(
    server: LiveServer, method: str, path: str, requests: int, clients: int
) -> tuple[float, list[float]]:
    """Send ``requests`` calls from ``clients`` threads; return wall time and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop(count: int) -> None:
        with server.client(timeout=30) as http:
            for _ in range(count):
                started = time.perf_counter()
                response = http.request(method, path)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in per_client]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies


def _bench(url: str, data_dir: Path, requests: int, clients: int) -> dict[str, float]:
    with running(data_dir, url, INLINE_WORKERS="2", LOG_LEVEL="WARNING") as server:
        base_wall, base_lat = _load(server, "GET", "/health/live", requests, clients)
        began = time.perf_counter()
        enqueue_wall, latencies = _load(server, "POST", "/api/v1/reports/dummy", requests, clients)
        with server.client(timeout=30) as http:
            while True:
                page = http.get(
                    "/api/v1/reports/jobs", params={"status": "completed", "limit": 1}
                ).json()
                pending = http.get("/api/v1/reports/queues/status").json()["queues"]
                busy = sum(q["waiting"] + q["running"] for q in pending)
                if busy == 0 and page["items"]:
                    break
                time.sleep(0.05)
        all_done = time.perf_counter() - began
    return {
        "base_rps": requests / base_wall,
        "base_p50_ms": statistics.median(base_lat) * 1000,
        "rps": requests / enqueue_wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "jobs_per_s": requests / all_done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            (
                "SQLite",
                _bench(f"sqlite:///{tmp}/b.db", Path(tmp) / "s", args.requests, args.clients),
            )
        )
        name = f"bench_{os.getpid()}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            pg = (
                ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
                + f"/{name}"
            )
            rows.append(("PostgreSQL", _bench(pg, Path(tmp) / "p", args.requests, args.clients)))
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{args.requests} POST /api/v1/reports/dummy, {args.clients} clients, inline pool of 2\n")
    print(
        "| ledger | enqueue req/s | p50 ms | p99 ms | end-to-end jobs/s "
        "| baseline GET /health/live req/s (p50 ms) | enqueue / baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        cells = f"{r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['jobs_per_s']:.0f}"
        base = f"{r['base_rps']:.0f} ({r['base_p50_ms']:.1f}) | {r['rps'] / r['base_rps']:.2f}"
        print(f"| {label} | {cells} | {base} |")


if __name__ == "__main__":
    main()
