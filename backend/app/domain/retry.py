"""The backoff between attempts, and which failure is final."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: The largest jitter added on top of a nominal delay, as a share of it.
RETRY_JITTER = 0.10


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a small positive jitter: the spec's ``60 * 2 ** retries``.

    After attempt ``n`` fails, the next one waits ``d + U(0, RETRY_JITTER * d)`` seconds,
    never more than ``cap``, where ``d = min(cap, base * 2**(n-1))``: with the defaults
    (base 60 s, cap 300 s) 60, 120, 240 seconds, each up to 10 % later.
    """

    base_seconds: float = 60.0
    cap_seconds: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def nominal(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (1-based) before jitter."""
        return min(self.cap_seconds, self.base_seconds * 2.0 ** max(attempt - 1, 0))

    def delay(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (1-based), jitter included."""
        return self.jittered(self.nominal(attempt))

    def after(self, attempt: int, limit: int) -> float | None:
        """The wait after a retryable failure of attempt ``attempt``, or None: final.

        ``attempt`` is the ledger's count; the failure of the ``limit``-th attempt is final.
        """
        return self.delay(attempt) if attempt < limit else None

    def jittered(self, seconds: float) -> float:
        """``seconds`` plus up to ``RETRY_JITTER`` of it, capped (spreads a burst of retries)."""
        extra = float(self.rng.uniform(0, RETRY_JITTER * seconds))
        return min(self.cap_seconds, seconds + extra)
