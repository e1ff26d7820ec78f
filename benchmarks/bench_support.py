"""Helpers of the backend benchmark: timed load from threads, processes, percentiles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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


def creation_cost(folder: Path, count: int = 200) -> float:
    """CPU milliseconds this process spends creating one file or folder in ``folder``.

    A dummy job creates three (its scratch file, its job and attempt folders). On this
    machine's ext4 the cost swings with the folder and the day, by more than tenfold
    (figures: docs/benchmarks.md, "The job pipeline beside its peers").
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    try:
        cpu = time.process_time()
        for i in range(count):
            (probe / f"f{i}").write_bytes(b"x")
            (probe / f"d{i}").mkdir()
        return (time.process_time() - cpu) * 1000 / (2 * count)
    finally:
        shutil.rmtree(probe)


#: Where scratch folders may go: the project's ``data/`` (the default ``DATA_DIR``) and the
#: system's temporary folder, on the same disk here.
SCRATCH_CANDIDATES = (ROOT / "data", Path(tempfile.gettempdir()))
#: The folder chosen and the cost :func:`creation_cost` measured there, per candidate.
SCRATCH_PROBE: dict[Path, float] = {}


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder in the candidate where creating files costs least, measured now.

    The platform's artifacts are written and fsynced there as anywhere; the choice only
    keeps the disk's day (:func:`creation_cost`) from standing in for the platform's cost.
    """
    if not SCRATCH_PROBE:
        SCRATCH_PROBE.update({c: creation_cost(c) for c in SCRATCH_CANDIDATES})
    base = min(SCRATCH_PROBE, key=SCRATCH_PROBE.__getitem__)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)


def scratch_note() -> str:
    """One line for a report: the scratch folder's creation cost, and the other's."""
    costs = sorted(SCRATCH_PROBE.items(), key=lambda item: item[1])
    return "; ".join(f"{path}: {ms:.3f} ms" for path, ms in costs)


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
