"""Helpers of the backend benchmark: timed load from threads, processes, percentiles."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    name: str
    enqueue_ms: list[float]
    start_ms: list[float]
    jobs_per_s: float


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder beside the project's own ``data/`` (the default ``DATA_DIR``).

    Not under ``/tmp``: on this machine a file or folder created there costs about 1 ms of
    kernel time (0.03 ms under the project's folder), which would dominate a dummy job.
    """
    base = ROOT / "data"
    base.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load(jobs: int, clients: int, send: Callable[[], None]) -> list[float]:
    """Call ``send`` ``jobs`` times from ``clients`` threads; return each call's ms."""
    latencies: list[float] = []
    lock = threading.Lock()

    def loop(count: int) -> None:
        for _ in range(count):
            began = time.perf_counter()
            send()
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    threads = [
        threading.Thread(target=loop, args=(jobs // clients + (i < jobs % clients),))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


@contextlib.contextmanager
def process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    ready: str | Callable[[], bool],
    timeout: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` until the block ends, once ``ready`` (a log line, or a check) says so."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

        def started() -> bool:
            if isinstance(ready, str):
                return ready in log.read_text(errors="replace")
            return ready()

        deadline = time.monotonic() + timeout
        while not started():
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError(f"{args} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def check_alive(watch: Sequence[subprocess.Popen[bytes]]) -> None:
    """Raise if one of the processes a wait depends on has exited."""
    for proc in watch:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    every: float = 0.05,
    watch: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Poll ``check`` until it is true; raise, naming ``what``, after ``timeout`` seconds or
    as soon as a process of ``watch`` has exited."""
    deadline = time.monotonic() + timeout
    while not check():
        check_alive(watch)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done after {timeout:g} s")
        time.sleep(every)


def wait_results(
    redis: Redis,
    key: str,
    count: int,
    timeout: float = 300,
    watch: Sequence[subprocess.Popen[bytes]] = (),
) -> list[list[float]]:
    deadline = time.monotonic() + timeout
    while redis.llen(key) < count:
        check_alive(watch)
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw jobs: {redis.llen(key)}/{count} done")
        time.sleep(0.005)
    return [json.loads(item) for item in redis.lrange(key, 0, -1)]


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"
