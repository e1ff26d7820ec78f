"""Routing and the traffic dial: which backend takes a job, and the guard of the split."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from app.core.circuit import CircuitPolicy
from app.core.settings.base import Environment, SettingsGroup
from app.core.settings.runtime import ProcessSettings
from app.dispatch.router import RoutingPolicy
from app.domain.errors import InvalidInput
from app.domain.queues import Backend
from app.domain.traffic import GuardPolicy, TrafficSplit


class RoutingSettings(SettingsGroup):
    """Routing.

    Which backend takes a job: the traffic split, fallbacks and circuit breakers; see
    [migration](migration.md).
    """

    dispatch_backend: Literal["auto", "celery", "rq", "inline", "sync", "asyncio"] = Field(
        "auto",
        description="`auto`: the router chooses; otherwise force that one backend. `sync` "
        "runs the job in the enqueue request, `asyncio` as a task of the API's event loop: "
        "never chosen by `auto` ([trade-offs](tradeoffs.md)).",
    )
    celery_enabled: bool = Field(
        True, description="Offer the Celery backend (auto mode); phase 0: off."
    )
    rq_enabled: bool = Field(True, description="Offer the RQ backend (auto mode); phase 3: off.")
    celery_available: bool | None = Field(
        None,
        description="The router's Celery switch: `false` takes Celery out of routing without "
        "stopping it (its queued jobs still run; new ones go to RQ); `true` assumes Celery "
        "available without probing it. Seeds `app.dispatch.router.CELERY_AVAILABLE`.",
        json_schema_extra={"doc_default": "unset: detected (broker and workers probed)"},
    )
    celery_traffic_percent: int = Field(
        100, ge=0, le=100, description="Share of jobs preferring Celery over RQ, by job id."
    )
    celery_traffic_overrides: dict[str, int] = Field(
        default_factory=dict,
        description='Per report type share, e.g. {"pdf": 100, "dummy": 0} (JSON).',
    )
    inline_fallback: bool | None = Field(
        None,
        description="Run jobs on the inline pool when no worker can take them.",
        json_schema_extra={"doc_default": "unset: on in development only"},
    )
    availability_cache_seconds: float = Field(
        3.0,
        gt=0,
        le=300,
        description="How long a backend availability check is reused (the interval between "
        "probes).",
    )
    first_probe_wait: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Seconds one choice may wait, in all, for the brokers' first probes (a new "
        "process); later choices read the last probe.",
    )
    circuit_failures: int = Field(
        2, ge=1, le=100, description="Consecutive failures that open a circuit breaker."
    )
    circuit_reset_seconds: float = Field(
        10.0, gt=0, le=600, description="How long an open circuit stays open before one trial."
    )

    @field_validator("celery_traffic_overrides")
    @classmethod
    def _known_types(cls, value: dict[str, int]) -> dict[str, int]:
        try:
            TrafficSplit.parse(100, value)
        except InvalidInput as exc:
            raise ValueError(f"CELERY_TRAFFIC_OVERRIDES: {exc.message}") from exc
        return value

    @property
    def traffic_split(self) -> TrafficSplit:
        """The dial's first value (the ledger keeps it once an API process has seeded it)."""
        return TrafficSplit.parse(self.celery_traffic_percent, self.celery_traffic_overrides)

    def inline_allowed(self, process: ProcessSettings) -> bool:
        """Inline runs jobs when forced, when enabled, or by default in development."""
        if self.dispatch_backend != "auto":
            return self.dispatch_backend == "inline"
        if self.inline_fallback is not None:
            return self.inline_fallback
        return process.environment is Environment.DEVELOPMENT

    def policy(self, *, process: ProcessSettings) -> RoutingPolicy:
        """The router's choice: the split, inline where allowed, a forced backend."""
        forced = None if self.dispatch_backend == "auto" else Backend(self.dispatch_backend)
        return RoutingPolicy(
            split=self.traffic_split,
            inline_allowed=self.inline_allowed(process),
            forced=forced,
            first_probe_wait=self.first_probe_wait,
        )

    def circuit(self) -> CircuitPolicy:
        """When a circuit breaker (a broker's, a callback host's) opens and tries again."""
        return CircuitPolicy(self.circuit_failures, self.circuit_reset_seconds)


class TrafficSettings(SettingsGroup):
    """Traffic dial and guard.

    The split kept in the ledger at run time (CELERY_TRAFFIC_PERCENT gives its first
    value) and the guard that rolls a bad step back; see [console](console.md).
    """

    traffic_poll_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often each API process reads the traffic dial from the ledger: a "
        "move made on one replica is applied by all within this time.",
    )
    traffic_guard_enabled: bool = Field(
        True, description="Roll the dial back by itself when a step makes Celery worse than RQ."
    )
    traffic_guard_interval: float = Field(
        15.0, gt=0, le=3600, description="Seconds between two judgements of the guard."
    )
    traffic_guard_window: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="Seconds of jobs the guard compares (the sliding window); a step is also "
        "on probation for this long before it becomes the value to roll back to.",
    )
    traffic_guard_min_jobs: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Celery jobs of the window needed before the guard judges (and RQ jobs "
        "before RQ's figures are the baseline instead of zero).",
    )
    traffic_guard_max_failure_delta: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Roll back when Celery's failure rate exceeds RQ's by more than this.",
    )
    traffic_guard_max_wait_ratio: float = Field(
        3.0,
        ge=1,
        le=1000,
        description="Roll back when Celery's mean queue wait exceeds RQ's times this (and "
        "TRAFFIC_GUARD_MIN_WAIT_SECONDS).",
    )
    traffic_guard_min_wait_seconds: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="A mean queue wait under this never triggers a rollback.",
    )

    def policy(self) -> GuardPolicy:
        """The guard's judgement of a step of the dial."""
        return GuardPolicy(
            enabled=self.traffic_guard_enabled,
            window=timedelta(seconds=self.traffic_guard_window),
            min_jobs=self.traffic_guard_min_jobs,
            max_failure_delta=self.traffic_guard_max_failure_delta,
            max_wait_ratio=self.traffic_guard_max_wait_ratio,
            min_wait_seconds=self.traffic_guard_min_wait_seconds,
        )
