"""The ``http`` section: wrk against the API (development, production) and a minimal app."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
from bench_support import process

from pipeline_bench.harness import HERE, PY, REDIS_URL, Bench, purge_celery, say
from tests.e2e.server import free_port, running

#: HTTP rounds: the three servers take turns (A B C A B C …), so that the machine's drift
#: falls on each of them alike; each figure is the median of its rounds.
HTTP_ROUNDS = 3
#: Seconds of rest after each wrk run. A 50-connection run ends with requests still in the
#: server (wrk closes its sockets; the server finishes what it accepted); without the rest,
#: the next run's first requests wait behind them and its p99 is that backlog, not the
#: latency at 4 connections. Measured without it (2026-12-01): platform p99 at 4
#: connections 80–130 ms right after a 50-connection run, 31–37 ms after 1 s of rest.
SETTLE_SECONDS = 1.0


def http(b: Bench) -> None:
    path = "/api/v1/reports/dummy"
    targets: dict[str, tuple[str, str]] = {}
    with contextlib.ExitStack() as stack:
        for environment in ("development", "production"):
            extra = b.env(DISPATCH_BACKEND="celery", ENVIRONMENT=environment)
            extra = {k: v for k, v in extra.items() if k not in ("DATA_DIR", "DATABASE_URL")}
            server = stack.enter_context(running(b.tmp / f"api-{environment}", b.db, **extra))
            key = server.create_key("bench", "submitter") if environment == "production" else ""
            targets[f"http.{environment}"] = (server.url + path, key)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = b.env(
            HOST="127.0.0.1",
            PORT=str(port),
            MINIMAL_DATABASE_URL=b.db,
            MINIMAL_BROKER_URL=REDIS_URL,
            MINIMAL_QUEUE=f"{b.prefix}minimal",
        )
        ready = answers_200(url + "/health/live")
        minimal = [PY, str(HERE / "minimal_app.py")]
        stack.enter_context(process(minimal, env, b.log("minimal"), ready, timeout=60))
        targets["http.minimal"] = (url + "/enqueue", "")
        wrk_rounds(b, targets)
    purge_celery(b.platform_queue, f"{b.prefix}minimal")


def wrk_rounds(b: Bench, targets: dict[str, tuple[str, str]]) -> None:
    """A 2 s warm-up each, then ``HTTP_ROUNDS`` turns of ``--duration / HTTP_ROUNDS`` (whole
    seconds) at 50 and at 4 connections; the medians are the figures."""
    for url, key in targets.values():
        wrk(url, 4, 2, key)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    seconds = max(1, round(b.args.duration / HTTP_ROUNDS))  # wrk takes whole seconds
    for _ in range(HTTP_ROUNDS):
        for name, (url, key) in targets.items():
            for connections in (50, 4):
                result = wrk(url, connections, seconds, key)
                runs.setdefault((name, connections), []).append(result)
                time.sleep(SETTLE_SECONDS)
    for (name, connections), results in runs.items():
        for measure in ("rps", "p50", "p99"):
            value = statistics.median(r[measure] for r in results)
            b.figures[f"{name}.{connections}.{measure}"] = value
        say(
            f"{name} @{connections}: req/s {[round(r['rps']) for r in results]}, "
            f"p99 ms {[round(r['p99'], 1) for r in results]}"
        )


def answers_200(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    return check


def wrk(url: str, connections: int, duration: float, key: str) -> dict[str, float]:
    """One wrk run (2 threads); req/s and p50/p99 ms. Raises on any error or non-2xx."""
    done = subprocess.run(
        [
            *("wrk", "-t", "2", "-c", str(connections), "-d", f"{duration:g}s"),
            *("--timeout", "10s", "--latency", "-s", str(HERE / "wrk_post.lua"), url),
        ],
        env={**os.environ, "BENCH_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk said nothing usable:\n{done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    if data["socket_errors"] or data["status_errors"]:
        raise RuntimeError(f"wrk on {url}: errors\n{done.stdout}")
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50": data["p50_us"] / 1000,
        "p99": data["p99_us"] / 1000,
    }
