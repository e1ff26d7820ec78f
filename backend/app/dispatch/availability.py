"""Backend availability, probed off the request path and read from a cache.

A probe talks to a broker (connect, ask which workers consume which queue); it may take
up to about a second when a broker is slow, so it never runs on a request thread. A
:class:`AvailabilityMonitor` runs it in a daemon thread every few seconds; requests read
the last answer at once, and wait (bounded) only before the very first answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from app.domain.queues import Queue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Availability:
    """One probe's answer: does the broker answer, and how many workers consume each queue."""

    reachable: bool
    workers: Mapping[Queue, int] = field(default_factory=dict)
    error: str | None = None
    checked_at: float = field(default_factory=time.monotonic)


UNKNOWN = Availability(False, {}, "not probed yet", 0.0)


@dataclass(frozen=True, slots=True)
class BackendState:
    """What the router needs to know about one backend for one queue."""

    reachable: bool
    workers: int
    reason: str = ""

    @property
    def ready(self) -> bool:
        """Reachable, with at least one worker for the queue."""
        return self.reachable and self.workers > 0


def steady(previous: Availability, current: Availability) -> Availability:
    """``current``, except that a worker missing from one reply only is still counted.

    A busy worker may answer an inspection late; one missed reply must not send a burst
    of jobs elsewhere. A worker gone for two probes in a row is gone.
    """
    if not (current.reachable and previous.reachable):
        return current
    workers = dict(current.workers)
    for queue, count in previous.workers.items():
        workers[queue] = workers.get(queue) or count
    return Availability(True, workers, current.error, current.checked_at)


class AvailabilityMonitor:
    """Runs ``probe`` in a background thread every ``interval`` seconds; caches its answer."""

    def __init__(
        self,
        name: str,
        probe: Callable[[], Availability],
        interval: float,
        first_wait: float = 1.0,
    ) -> None:
        self.name = name
        self._probe = probe
        self._interval = interval
        self._value = UNKNOWN
        self._first = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._first_wait = first_wait
        self._wait_until = 0.0

    def start(self) -> None:
        """Start probing now (idempotent); the first answer comes within a probe's time."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._wait_until = time.monotonic() + self._first_wait
            self._thread = threading.Thread(
                target=self._loop, name=f"probe-{self.name}", daemon=True
            )
            self._thread.start()

    def get(self, wait: float = 0.0) -> Availability:
        """The last answer; before the first one, wait up to ``wait`` seconds for it.

        The wait window opens when probing starts and lasts ``first_wait``: while a hung
        broker keeps the first probe running, later callers get :data:`UNKNOWN` at once.
        """
        self.start()
        if not self._first.is_set() and wait > 0:
            remaining = min(wait, self._wait_until - time.monotonic())
            if remaining > 0:
                self._first.wait(remaining)
        return self._value

    def refresh(self) -> None:
        """Probe again as soon as possible (after a failed publish, say)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop probing; wait up to 5 seconds for the probe thread to end."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        previous = UNKNOWN
        while not self._stop.is_set():
            current = self._run_probe()
            self._value = steady(previous, current)
            previous = current
            self._first.set()
            self._wake.wait(self._interval)
            self._wake.clear()

    def _run_probe(self) -> Availability:
        try:
            value = self._probe()
        except Exception as exc:  # a probe must never kill the monitor
            value = Availability(False, {}, f"{type(exc).__name__}: {exc}"[:300])
        if value.reachable != self._value.reachable and self._first.is_set():
            log.warning(
                "backend.availability.changed",
                extra={"backend": self.name, "reachable": value.reachable, "error": value.error},
            )
        return value
