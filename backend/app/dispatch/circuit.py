"""A small circuit breaker guarding publishes to one broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; lets one trial through after ``reset_after``.

    While open, :meth:`allow` answers False at once, so a dead broker costs a request
    nothing; the trial that follows either closes the circuit or opens it again.
    """

    def __init__(
        self,
        failures: int = 2,
        reset_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state()

    def allow(self) -> bool:
        """Whether a publish may be tried now (in half-open state: one trial at a time)."""
        with self._lock:
            state = self._state()
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def available(self) -> bool:
        """Like :meth:`allow` but without taking the half-open trial."""
        with self._lock:
            state = self._state()
            return state is CircuitState.CLOSED or (
                state is CircuitState.HALF_OPEN and not self._trial
            )

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial = False
            if self._failures >= self._threshold or self._opened_at is not None:
                self._opened_at = self._clock()

    def _state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self._reset_after:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN
