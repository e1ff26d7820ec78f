"""The periodic tick: due schedules, then the housekeeping, for tickers other than Beat.

Beat sends each periodic task on its own crontab. Where Beat does not run (the RQ-era
stack, where RQ's cron scheduler sends the tick; ``make run``, where the API runs it on a
timer), one tick does it all. Every part is once per slot, recorded in the ledger, so any
number of tickers, of any kind, can run together: a second one finds each slot taken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.services.daily_stats import compute_daily_stats
from app.services.deps import Deps
from app.services.housekeeping import (
    Housekeeping,
    PeriodicOutcome,
    cleanup_expired,
    record_health,
    recover_stuck,
)
from app.services.schedules import Scheduling, fire_due

log = logging.getLogger(__name__)

#: The housekeeping a tick runs, each at most once per slot of its own period.
HOUSEKEEPING: tuple[Callable[..., PeriodicOutcome], ...] = (
    recover_stuck,
    record_health,
    cleanup_expired,
    compute_daily_stats,
)


def tick(
    *, deps: Deps, kit: Housekeeping, scheduling: Scheduling, housekeeping: bool = True
) -> dict[str, Any]:
    """Fire the due schedules, then (with ``housekeeping``) each housekeeping task.

    Each housekeeping task runs when its slot is free. A part that fails is logged and the
    others still run.
    """
    result: dict[str, Any] = {}
    try:
        result["schedules"] = fire_due(deps=deps, kit=scheduling)
    except Exception as exc:
        log.exception("ticker.schedules.failed")
        result["schedules"] = {"error": type(exc).__name__}
    for service in HOUSEKEEPING if housekeeping else ():
        try:
            outcome = service(deps=deps, kit=kit)
        except Exception:
            log.exception("ticker.housekeeping.failed", extra={"service": service.__name__})
            result[service.__name__] = "failed"
            continue
        result[outcome.task] = "done" if outcome.ran else "skipped"
    return result


class Ticker:
    """A daemon thread that ticks every ``interval`` seconds (the API's ticker).

    Schedules are looked at every tick; the housekeeping once per minute of the clock,
    its shortest period.
    """

    def __init__(
        self,
        *,
        deps: Deps,
        kit: Housekeeping,
        scheduling: Scheduling,
        interval: float,
    ) -> None:
        self._deps, self._kit, self._scheduling = deps, kit, scheduling
        self._interval = interval
        self._minute: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> None:
        """Start ticking in the background; the first tick is immediate."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current tick, waiting at most ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def tick_once(self) -> dict[str, Any]:
        """One tick now; the housekeeping only on the first tick of a clock minute."""
        minute = self._deps.clock().replace(second=0, microsecond=0)
        housekeeping, self._minute = minute != self._minute, minute
        return tick(
            deps=self._deps, kit=self._kit, scheduling=self._scheduling, housekeeping=housekeeping
        )

    def _run(self) -> None:
        while True:
            self.tick_once()
            if self._stop.wait(self._interval):
                return
