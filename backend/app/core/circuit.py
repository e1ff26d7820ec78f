"""A small circuit breaker guarding calls to one dependency (a broker, a callback host)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Hears ``(name, state)`` of a breaker: its initial state, then every change.
CircuitListener = Callable[[str, CircuitState], None]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """When a breaker opens (consecutive ``failures``) and tries again (``reset_after`` s)."""

    failures: int = 2
    reset_after: float = 10.0


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; lets one trial through after ``reset_after``.

    While open, :meth:`allow` answers False at once, so a dead dependency costs a caller
    nothing; the trial that follows either closes the circuit or opens it again.

    Observability: ``listener`` hears the initial state and every change, under the
    breaker's lock (so in order; it must be quick). Changes caused by calls (a failure
    that opens, a success that closes) are reported at once. The one change that time
    alone causes, open turning half-open, is reported by a one-shot timer armed when the
    circuit opens (or earlier, by any read of the state). A gauge fed by the listener is
    therefore right whenever it is scraped, in every process, even without traffic. A
    scrape-time collector would be simpler but wrong: it only sees the breakers of the
    process serving the scrape, not those of other uvicorn workers or Celery children.
    """

    def __init__(
        self,
        failures: int = 2,
        reset_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "circuit",
        listener: CircuitListener | None = None,
    ) -> None:
        self.name = name
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._listener = listener
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.RLock()
        self._reported = CircuitState.CLOSED
        self._notify(CircuitState.CLOSED)

    @classmethod
    def of(
        cls, policy: CircuitPolicy, *, name: str, listener: CircuitListener | None = None
    ) -> CircuitBreaker:
        """A breaker named ``name`` that follows ``policy``."""
        return cls(policy.failures, policy.reset_after, name=name, listener=listener)

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._observe()

    def allow(self) -> bool:
        """Whether a call may be tried now (in half-open state: one trial at a time)."""
        with self._lock:
            state = self._observe()
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def available(self) -> bool:
        """Like :meth:`allow` but without taking the half-open trial."""
        with self._lock:
            state = self._observe()
            return state is CircuitState.CLOSED or (
                state is CircuitState.HALF_OPEN and not self._trial
            )

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False
            self._observe()

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial = False
            if self._failures >= self._threshold or self._opened_at is not None:
                self._opened_at = self._clock()
                self._watch(self._opened_at, self._reset_after)
            self._observe()

    def refresh(self) -> CircuitState:
        """Report a change that time alone made (the timer calls it); returns the state."""
        return self.state

    def _state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self._reset_after:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def _observe(self) -> CircuitState:
        """The state now; tells the listener when it differs from the last one reported."""
        state = self._state()
        if state is not self._reported:
            self._reported = state
            self._notify(state)
        return state

    def _notify(self, state: CircuitState) -> None:
        if self._listener is None:
            return
        try:
            self._listener(self.name, state)
        except Exception:  # observing must never break the guarded call
            log.warning("circuit.listener_failed", extra={"circuit": self.name}, exc_info=True)

    def _watch(self, opened_at: float, delay: float) -> None:
        """Arm a daemon timer that reports half-open once ``reset_after`` has passed."""
        if self._listener is None:
            return
        timer = threading.Timer(delay, self._wake, args=(opened_at,))
        timer.daemon = True
        timer.start()

    def _wake(self, opened_at: float) -> None:
        with self._lock:
            if self._opened_at != opened_at:
                return  # closed or opened again since: a newer timer (or none) is due
            remaining = opened_at + self._reset_after - self._clock()
            if remaining > 0:  # woke a little early (or the clock is not the timer's)
                self._watch(opened_at, max(remaining, 0.01))
                return
            self._observe()
