"""The traffic dial: the share of jobs preferring Celery over RQ, and the guard's judgement.

Pure Python: what a split is and which values are legal, the dial's state and its audit
records, and :func:`judge`, which compares the Celery side of a sliding window with the
RQ side against the guard's thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from app.domain.errors import InvalidInput
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus


class InvalidTrafficSplit(InvalidInput):
    """A share outside 0..100, or an override for something that is not a report type."""

    code = "INVALID_TRAFFIC_SPLIT"


class TrafficReasonRequired(InvalidInput):
    """Every move of the dial says why (1 to 500 characters)."""

    code = "TRAFFIC_REASON_REQUIRED"


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """Percent of jobs preferring Celery, with per report type overrides."""

    celery_percent: int
    overrides: Mapping[ReportType, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, celery_percent: Any, overrides: Mapping[str, Any] | None) -> TrafficSplit:
        """A split from untrusted values.

        Raises:
            InvalidTrafficSplit: a share that is not an integer in 0..100, or an unknown type.
        """
        parsed: dict[ReportType, int] = {}
        for name, share in (overrides or {}).items():
            if name not in {t.value for t in ReportType}:
                known = ", ".join(t.value for t in ReportType)
                raise InvalidTrafficSplit(f"overrides: {name!r} is not a report type ({known}).")
            parsed[ReportType(name)] = _share(share, f"overrides.{name}")
        return cls(_share(celery_percent, "celery_percent"), parsed)

    def share(self, report_type: ReportType) -> int:
        """The Celery share of ``report_type``: its override, else ``celery_percent``."""
        return self.overrides.get(report_type, self.celery_percent)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form the ledger stores (overrides by report type name, sorted)."""
        return {
            "celery_percent": self.celery_percent,
            "overrides": {t.value: v for t, v in sorted(self.overrides.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrafficSplit:
        """A split from its stored JSON form, checked as :meth:`parse` checks it."""
        return cls.parse(data.get("celery_percent"), data.get("overrides"))

    def __str__(self) -> str:
        extra = "".join(f", {t.value} {v}%" for t, v in sorted(self.overrides.items()))
        return f"celery {self.celery_percent}%{extra}"


def _share(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidTrafficSplit(f"{name} must be an integer from 0 to 100, not {value!r}.")
    return value


def check_reason(reason: str | None) -> str:
    """The reason of a move, stripped; raises :class:`TrafficReasonRequired` unless 1..500."""
    text = (reason or "").strip()
    if not text or len(text) > 500:
        raise TrafficReasonRequired("Say why the dial moves: a reason of 1 to 500 characters.")
    return text


class ChangeKind(StrEnum):
    """Who moved the dial: its seed, an operator, or the guard's rollback."""

    SEED = "seed"  # the first value, from the environment
    OPERATOR = "operator"  # an operator moved or pinned the dial
    ROLLBACK = "rollback"  # the guard put back the last healthy value


@dataclass(frozen=True, slots=True)
class DialState:
    """The dial as the ledger holds it; ``version`` grows with every change.

    ``healthy`` is the last split the guard saw healthy for a whole window (or the first
    value): where a rollback goes. ``pinned`` switches the guard off.
    """

    split: TrafficSplit
    healthy: TrafficSplit
    pinned: bool
    version: int
    changed_at: datetime
    changed_by: str


@dataclass(frozen=True, slots=True)
class DialChange:
    """One audited change: who, when, from, to, why."""

    id: int
    at: datetime
    actor: str
    kind: ChangeKind
    before: TrafficSplit | None
    after: TrafficSplit
    pinned: bool
    reason: str


# --------------------------------------------------------------------------- the guard


@dataclass(frozen=True, slots=True)
class WindowJob:
    """What the guard needs of one Celery or RQ job of the window."""

    backend: Backend
    status: JobStatus
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class SideFigures:
    """One backend's jobs in the window: finished ones, failures, and queue waits."""

    finished: int = 0
    failed: int = 0
    waits: Sequence[float] = ()

    @property
    def failure_rate(self) -> float:
        """Failed over finished jobs; 0.0 when none finished."""
        return self.failed / self.finished if self.finished else 0.0

    @property
    def mean_wait(self) -> float:
        """The mean queue wait in seconds; 0.0 when there is none."""
        return sum(self.waits) / len(self.waits) if self.waits else 0.0


def figures(jobs: Sequence[WindowJob], *, now: datetime) -> SideFigures:
    """One side's figures from its jobs of the window.

    The failure rate is over completed + failed jobs; the waits are those of every started
    job, and of every job still waiting counted up to ``now`` (a side with no worker waits
    forever).
    """
    finished = failed = 0
    waits: list[float] = []
    for job in jobs:
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            finished += 1
            failed += job.status is JobStatus.FAILED
        enqueued = job.queued_at or job.created_at
        if job.started_at is not None:
            waits.append(max((job.started_at - enqueued).total_seconds(), 0.0))
        elif job.status in (JobStatus.PENDING, JobStatus.QUEUED):
            waits.append(max((now - enqueued).total_seconds(), 0.0))
    return SideFigures(finished, failed, waits)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """The guard's settings (see the TRAFFIC_GUARD_* settings)."""

    enabled: bool = True
    window: timedelta = timedelta(minutes=10)
    min_jobs: int = 20
    max_failure_delta: float = 0.10
    max_wait_ratio: float = 3.0
    min_wait_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """``healthy`` None: too few Celery jobs to tell. ``cause``: failure_rate or queue_wait."""

    healthy: bool | None
    cause: str | None = None
    detail: str = ""


def judge(celery: SideFigures, rq: SideFigures, policy: GuardPolicy) -> Verdict:
    """Is the Celery side worse than RQ's beyond the thresholds?

    RQ's figures are the baseline when RQ had at least ``min_jobs`` jobs in the window;
    otherwise (the dial near 100 %) the baseline is no failure and no wait.
    """
    if celery.finished >= policy.min_jobs:
        base = rq.failure_rate if rq.finished >= policy.min_jobs else 0.0
        if celery.failure_rate - base > policy.max_failure_delta:
            return Verdict(
                False,
                "failure_rate",
                f"Celery failed {celery.failed}/{celery.finished} jobs "
                f"({celery.failure_rate:.0%}) against RQ's {base:.0%} "
                f"(threshold +{policy.max_failure_delta:.0%})",
            )
    if len(celery.waits) >= policy.min_jobs:
        base = rq.mean_wait if len(rq.waits) >= policy.min_jobs else 0.0
        limit = max(base * policy.max_wait_ratio, policy.min_wait_seconds)
        if celery.mean_wait > limit:
            return Verdict(
                False,
                "queue_wait",
                f"Celery jobs waited {celery.mean_wait:.1f} s on average against RQ's "
                f"{base:.1f} s (limit {limit:.1f} s)",
            )
    if celery.finished >= policy.min_jobs:
        return Verdict(True)
    return Verdict(None)


GUARD_CAUSES = ("failure_rate", "queue_wait")


class TrafficRepository(Protocol):
    """The traffic dial (one row) and its audit trail; each call is one transaction."""

    def current(self) -> DialState | None:
        """The dial, or None before it was first seeded."""
        ...

    def seed(self, split: TrafficSplit, *, now: datetime) -> tuple[DialState, bool]:
        """Create the dial at ``split`` unless it exists (audited as a seed).

        Returns:
            The dial, and whether this call created it.
        """
        ...

    def change(
        self,
        split: TrafficSplit,
        *,
        pinned: bool,
        actor: str,
        kind: ChangeKind,
        reason: str,
        now: datetime,
        expected_version: int | None = None,
        healthy: TrafficSplit | None = None,
    ) -> tuple[DialState, DialChange] | None:
        """Move the dial and record the change in one transaction.

        ``healthy`` also replaces the last healthy value. With ``expected_version``, only
        if the dial is still at that version (None when it moved meanwhile: another
        replica's guard or an operator got there first).
        """
        ...

    def mark_healthy(self, split: TrafficSplit, *, version: int) -> bool:
        """Remember ``split`` as the last healthy value if the dial is still at ``version``."""
        ...

    def history(self, *, limit: int) -> Sequence[DialChange]:
        """The latest changes, newest first."""
        ...

    def window_jobs(self, since: datetime, *, limit: int) -> Sequence[WindowJob]:
        """Celery and RQ jobs created since ``since``, newest first, at most ``limit``."""
        ...


class TrafficRecorder(Protocol):
    """Where the dial reports what it applied and what changed (metrics)."""

    def applied(self, split: TrafficSplit) -> None:
        """This process now routes by ``split``."""
        ...

    def changed(self, kind: ChangeKind, cause: str | None = None) -> None:
        """This process changed the dial (a rollback gives its ``cause``)."""
        ...
