"""What the probes report: dependency checks with a deadline, and the circuit breakers.

A check is a callable that raises (or returns False) when its component does not answer.
Each one runs in its own daemon thread; a check still running at the deadline is reported
as timed out and left to finish on its own (its driver's own timeouts bound it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.domain.operations import ComponentHealth

Check = Callable[[], object]


class _Run:
    def __init__(self, name: str, check: Check) -> None:
        self.name = name
        self.check = check
        self.started = time.perf_counter()
        self.elapsed: float | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"health-{name}", daemon=True)

    def _run(self) -> None:
        try:
            if self.check() is False:
                self.error = "not answering"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        self.elapsed = time.perf_counter() - self.started

    def result(self, timeout: float) -> ComponentHealth:
        if self.elapsed is None:
            return ComponentHealth(self.name, False, timeout, f"no answer within {timeout:g}s")
        return ComponentHealth(self.name, self.error is None, self.elapsed, self.error)


def run_checks(checks: Mapping[str, Check], timeout: float) -> list[ComponentHealth]:
    """Run every check concurrently; each gets at most ``timeout`` seconds."""
    runs = [_Run(name, check) for name, check in checks.items()]
    for run in runs:
        run.thread.start()
    deadline = time.monotonic() + timeout
    for run in runs:
        run.thread.join(max(0.0, deadline - time.monotonic()))
    return [run.result(timeout) for run in runs]


@dataclass(frozen=True)
class HealthService:
    """What a process's probes report: its dependencies and its circuit breakers.

    The dependencies are those the process needs (the ledger, every enabled broker); the
    composition root gives each process one.
    """

    checks: Mapping[str, Check]
    circuit_states: Callable[[], Mapping[str, str]]
    timeout: float

    def components(self) -> list[ComponentHealth]:
        """Every component, checked at once, each within ``timeout``."""
        return run_checks(self.checks, self.timeout)

    def circuits(self) -> dict[str, str]:
        """Each breaker's state (``closed``, ``half_open``, ``open``), by name."""
        return dict(self.circuit_states())
