"""Jobs and workers: attempts, retries, heartbeats and time limits, the same on every backend.

:meth:`JobSettings.policy` builds the services' :class:`~app.services.deps.JobPolicy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from pydantic import Field, field_validator, model_validator

from app.core.settings.base import SettingsGroup
from app.domain.queues import ReportType
from app.domain.retry import RetryPolicy
from app.services.deps import JobPolicy

if TYPE_CHECKING:
    from app.core.settings.delivery import CallbackSettings, MailSettings


# processing_time may reach 3600 s: the hard limits leave room for the render itself.
DEFAULT_TIME_LIMITS: dict[str, float] = {
    ReportType.DUMMY.value: 3700.0,
    ReportType.PDF.value: 3900.0,
    ReportType.EXCEL.value: 3900.0,
    ReportType.ANALYSIS.value: 3900.0,
}


_TYPES = frozenset(t.value for t in ReportType)


class JobSettings(SettingsGroup):
    """Jobs and workers.

    Attempts, retries, heartbeats, deliveries and time limits, the same on every backend;
    see [reliability](reliability.md).
    """

    max_attempts: int = Field(
        4,
        ge=1,
        le=10,
        description="Attempts per job, first one included (4: the spec's max_retries=3).",
    )
    retry_backoff_base: float = Field(
        60.0,
        gt=0,
        le=600,
        description="Seconds: after attempt n fails, the next waits base·2ⁿ⁻¹ plus up to 10 % "
        "jitter (60, 120, 240 s by default), capped by RETRY_BACKOFF_MAX. Callbacks and emails "
        "follow it too.",
    )
    retry_backoff_max: float = Field(
        300.0, gt=0, le=3600, description="Seconds: the longest wait between two attempts."
    )
    progress_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between two progress writes of one job (also how often a running "
        "job notices it was cancelled).",
    )
    heartbeat_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds without a progress write (the heartbeat) after which a running "
        "job's worker is presumed lost and a redelivery may reclaim it (>= 4 x "
        "PROGRESS_INTERVAL).",
    )
    lost_worker_checks: int = Field(
        5,
        ge=0,
        le=50,
        description="Times one delivery of a job found running under another worker comes "
        "back to look again, each when that worker's heartbeat would be stale (then it "
        "reclaims the job). Every backend; Beat's recovery is the backstop.",
    )
    defer_max_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait between two deliveries of a job while the ledger does not "
        "answer (the wait doubles from 1 s). Every backend.",
    )
    defer_budget_seconds: float = Field(
        600.0,
        ge=0,
        le=86400,
        description="How long the `sync` backend waits in the request for a job's later "
        "deliveries (retries, the ledger back), then answers with the row as it stands. The "
        "other backends wait off the worker (a countdown, a scheduled retry, a timer).",
    )
    report_time_limits: dict[str, float] = Field(
        default_factory=dict,
        description='Hard time limit (s) per report type over the defaults, e.g. {"pdf": 600} '
        "(JSON); the soft limit is 90 % of it, leaving the render at least 2 s (half of a shorter "
        "limit) to record its failure.",
        json_schema_extra={
            "doc_default": ", ".join(f"{t} {s:g}" for t, s in DEFAULT_TIME_LIMITS.items())
        },
    )
    cancel_grace_seconds: float = Field(
        3.0,
        ge=0,
        le=300,
        description="Wait before the stop backstop hits a cancelled running job (its backend is "
        "told to stop it).",
    )
    celery_max_tasks_per_child: int = Field(
        200, ge=1, description="Recycle a Celery pool process after this many tasks."
    )
    celery_max_memory_per_child: int = Field(
        512_000,
        ge=10_000,
        description="KiB of resident memory before a Celery pool process is replaced.",
    )

    @field_validator("report_time_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, float]) -> dict[str, float]:
        for name, limit in value.items():
            if name not in _TYPES or limit <= 0:
                raise ValueError(f"REPORT_TIME_LIMITS: {name}={limit} is not a type: seconds")
        return value

    @model_validator(mode="after")
    def _heartbeat(self) -> Self:
        if self.heartbeat_timeout < 4 * self.progress_interval:
            raise ValueError("HEARTBEAT_TIMEOUT must be at least 4 x PROGRESS_INTERVAL")
        return self

    def hard_time_limit(self, report_type: str) -> float:
        """Seconds after which a worker kills a render of ``report_type``."""
        return self.report_time_limits.get(report_type, DEFAULT_TIME_LIMITS[report_type])

    def soft_time_limit(self, report_type: str) -> float:
        """Seconds after which a render of ``report_type`` is asked to stop."""
        return soft_limit(self.hard_time_limit(report_type))

    @property
    def longest_time_limit(self) -> float:
        return max(self.hard_time_limit(t.value) for t in ReportType)

    def retry(self) -> RetryPolicy:
        """The backoff between attempts (callbacks and emails follow it too)."""
        return RetryPolicy(self.retry_backoff_base, self.retry_backoff_max)

    def policy(self, *, callbacks: CallbackSettings, mail: MailSettings) -> JobPolicy:
        """How the services run jobs; a callback's attempts and an email's recipients too."""
        return JobPolicy(
            max_attempts=self.max_attempts,
            retry=self.retry(),
            progress_interval=self.progress_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            callback_attempts=callbacks.callback_max_attempts,
            lost_worker_checks=self.lost_worker_checks,
            defer_max_seconds=self.defer_max_seconds,
            max_recipients=mail.email_max_recipients,
        )


#: Seconds a render stopped at its soft limit has, at least, to record its failure and ask
#: for its retry before the hard limit kills it (0.8 s, 10 % of an 8 s limit, was once too
#: little on a loaded machine: the attempt was killed and recorded TIME_LIMIT_EXCEEDED).
SOFT_LIMIT_GRACE = 2.0


def soft_limit(hard: float) -> float:
    """The soft limit under ``hard``: 90 % of it, at least ``SOFT_LIMIT_GRACE`` seconds below
    it, and never under half of it."""
    return round(max(min(hard * 0.9, hard - SOFT_LIMIT_GRACE), hard / 2), 3)
