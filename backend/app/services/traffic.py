"""The traffic dial at run time: seeded from the settings, moved by operators, guarded.

Where the guard runs: in every API process, in :class:`DialLoop`, the background thread
that already reads the dial every ``TRAFFIC_POLL_SECONDS`` to apply it. Not in Beat,
because

- the guard must act precisely when the Celery side misbehaves, and Beat is a Celery
  process on the Celery broker: a broken Celery deployment would take its own guard down;
- Beat's schedule is per minute, while a bad step should be undone within seconds;
- the dial only matters where jobs are routed, in the API processes, which are always
  running when there is traffic to protect.

Several replicas judging at once is harmless: a rollback is a conditional update on the
dial's version, so exactly one replica's rollback lands (and is audited and counted); the
others see the dial moved and apply it on their next read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.domain.errors import Unavailable
from app.domain.jobs import utcnow
from app.domain.queues import Backend, ReportType
from app.domain.traffic import (
    ChangeKind,
    DialChange,
    DialState,
    GuardPolicy,
    TrafficRecorder,
    TrafficRepository,
    TrafficSplit,
    Verdict,
    check_reason,
    figures,
    judge,
)

log = logging.getLogger(__name__)

#: At most this many jobs of the window are read per check (the newest).
WINDOW_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """What one check decided.

    ``action`` is one of skipped, watching, promoted, kept, rolled_back, raced (the dial
    moved meanwhile).
    """

    action: str
    verdict: Verdict | None = None
    change: DialChange | None = None


class TrafficDial:
    """This process's view of the dial: what it applies, and the operations on it."""

    def __init__(
        self,
        *,
        repo: TrafficRepository,
        initial: TrafficSplit,
        guard: GuardPolicy,
        apply: Callable[[TrafficSplit], None],
        recorder: TrafficRecorder,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repo = repo
        self.initial = initial
        self.guard = guard
        self._apply = apply
        self._recorder = recorder
        self._clock = clock
        self.applied_version: int | None = None
        self._lock = threading.Lock()

    def start(self) -> DialState:
        """Seed the dial from the settings unless the ledger has one; apply it."""
        state, created = self.repo.seed(self.initial, now=self._clock())
        if created:
            self._recorder.changed(ChangeKind.SEED)
        elif state.split != self.initial:
            log.info(
                "traffic.dial.kept",
                extra={"dial": str(state.split), "environment": str(self.initial)},
            )
        self._use(state)
        return state

    def state(self) -> DialState:
        """The dial as the ledger has it now.

        Raises:
            Unavailable: ``TRAFFIC_DIAL_MISSING``: the dial was never seeded.
        """
        state = self.repo.current()
        if state is None:
            raise Unavailable("The traffic dial is not seeded yet.", code="TRAFFIC_DIAL_MISSING")
        return state

    def history(self, *, limit: int = 50) -> Sequence[DialChange]:
        """The latest ``limit`` changes of the dial, newest first."""
        return self.repo.history(limit=limit)

    def move(
        self,
        *,
        actor: str,
        reason: str | None,
        celery_percent: Any = None,
        overrides: Mapping[str, Any] | None = None,
        pinned: bool | None = None,
    ) -> DialState:
        """An operator's move: the fields given replace the current ones; audited.

        A move that sends no report type more to Celery than the last healthy value
        becomes the new healthy value: a step back towards RQ never needs a rollback.

        Raises:
            InvalidTrafficSplit: a share outside 0..100 or an unknown report type.
            TrafficReasonRequired: no reason, or one longer than 500 characters.
        """
        why = check_reason(reason)
        current = self.state()
        split = TrafficSplit.parse(
            current.split.celery_percent if celery_percent is None else celery_percent,
            current.split.as_dict()["overrides"] if overrides is None else overrides,
        )
        backwards = all(split.share(t) <= current.healthy.share(t) for t in ReportType)
        done = self.repo.change(
            split,
            pinned=current.pinned if pinned is None else pinned,
            actor=actor,
            kind=ChangeKind.OPERATOR,
            reason=why,
            now=self._clock(),
            healthy=split if backwards else None,
        )
        assert done is not None  # unconditional: only a missing dial returns None
        state, change = done
        self._recorder.changed(ChangeKind.OPERATOR)
        log.info(
            "traffic.dial.moved",
            extra={
                "actor": actor,
                "from": str(change.before),
                "to": str(split),
                "pinned": state.pinned,
                "reason": why,
            },
        )
        self._use(state)
        return state

    def sync(self) -> DialState | None:
        """Read the dial; apply it when it changed since this process last did."""
        state = self.repo.current()
        if state is not None and state.version != self.applied_version:
            self._use(state)
        return state

    def check(self) -> GuardOutcome:
        """One run of the guard: judge the current step, promote it or roll it back."""
        state = self.repo.current()
        if state is None or state.pinned or not self.guard.enabled:
            return GuardOutcome("skipped")
        if state.split == state.healthy:
            return GuardOutcome("kept")
        now = self._clock()
        start = now - self.guard.window
        jobs = self.repo.window_jobs(start, limit=WINDOW_LIMIT)
        step = max(start, state.changed_at)
        celery = figures(
            [j for j in jobs if j.backend is Backend.CELERY and j.created_at >= step], now=now
        )
        rq = figures([j for j in jobs if j.backend is Backend.RQ], now=now)
        verdict = judge(celery, rq, self.guard)
        if verdict.healthy is None:
            return GuardOutcome("watching", verdict)
        if verdict.healthy:
            if state.changed_at > start:  # on probation until a whole window has passed
                return GuardOutcome("watching", verdict)
            self.repo.mark_healthy(state.split, version=state.version)
            log.info("traffic.guard.promoted", extra={"dial": str(state.split)})
            return GuardOutcome("promoted", verdict)
        return self._roll_back(state, verdict, now)

    def _roll_back(self, state: DialState, verdict: Verdict, now: datetime) -> GuardOutcome:
        done = self.repo.change(
            state.healthy,
            pinned=False,
            actor="guard",
            kind=ChangeKind.ROLLBACK,
            reason=f"{verdict.cause}: {verdict.detail}",
            now=now,
            expected_version=state.version,
        )
        if done is None:
            return GuardOutcome("raced", verdict)
        new_state, change = done
        self._recorder.changed(ChangeKind.ROLLBACK, verdict.cause)
        log.warning(
            "traffic.guard.rolled_back",
            extra={
                "from": str(state.split),
                "to": str(state.healthy),
                "cause": verdict.cause,
                "detail": verdict.detail,
            },
        )
        self._use(new_state)
        return GuardOutcome("rolled_back", verdict, change)

    def _use(self, state: DialState) -> None:
        with self._lock:
            if self.applied_version is not None and state.version < self.applied_version:
                return  # an older read finishing late
            self._apply(state.split)
            self._recorder.applied(state.split)
            changed = self.applied_version not in (None, state.version)
            self.applied_version = state.version
        if changed:
            log.info("traffic.dial.applied", extra={"dial": str(state.split)})


class DialLoop:
    """A daemon thread: read the dial every ``poll`` seconds, run the guard every ``guard``."""

    def __init__(self, dial: TrafficDial, *, poll: float, guard: float) -> None:
        self._dial = dial
        self._poll = poll
        self._guard_every = guard
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-dial", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Start the loop; the first read comes after one ``poll``."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, waiting at most ``timeout`` seconds for its current round."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        next_guard = 0.0
        elapsed = 0.0
        while not self._stop.wait(self._poll):
            elapsed += self._poll
            try:
                self._dial.sync()
                if self._dial.guard.enabled and elapsed >= next_guard:
                    next_guard = elapsed + self._guard_every
                    outcome = self._dial.check()
                    log.debug(  # each judgement's record (the dial tests wait for it)
                        "traffic.guard.checked",
                        extra={"action": outcome.action, "version": self._dial.applied_version},
                    )
            except Exception as exc:  # the ledger may be away: keep the last applied value
                if not self._failing:
                    log.warning("traffic.dial.unreadable", extra={"error": repr(exc)[:300]})
                self._failing = True
            else:
                if self._failing:
                    log.info("traffic.dial.readable")
                self._failing = False
