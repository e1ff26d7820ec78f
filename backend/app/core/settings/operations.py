"""Security, limits and operations: API keys, rate limits, metrics, probes, housekeeping."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from app.core.settings.base import SettingsGroup
from app.services.housekeeping import HousekeepingPolicy


class SecuritySettings(SettingsGroup):
    """Security and limits.

    API keys, rate limits and secrets; see [reliability](reliability.md).
    """

    auth_enabled: bool | None = Field(
        None,
        description="Require an API key (X-API-Key) on report routes. Off is refused outside "
        "development.",
        json_schema_extra={"doc_default": "unset: on, except in development"},
    )
    auth_cache_seconds: float | None = Field(
        None,
        ge=0,
        le=300,
        description="Seconds an API key that authenticated is trusted by one API process "
        "without asking the ledger again (cached by key id and stored hash, never the key): a "
        "revoked key works at most that long; 0: always ask.",
        json_schema_extra={"doc_default": "`5` in production, else `0`"},
    )
    console_idle_minutes: int = Field(
        30, ge=1, le=1440, description="Minutes without a request before a console session ends."
    )
    rate_limit_requests: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="Requests allowed per caller (API key; console session: its key) per "
        "window on every API and console route, probes and /metrics excepted (a token bucket "
        "in Redis, shared by replicas).",
    )
    rate_limit_window: float = Field(60.0, gt=0, le=86_400, description="Rate-limit window (s).")
    max_body_bytes: int = Field(
        65_536,
        ge=1024,
        le=16_777_216,
        description="Largest request body accepted (bytes); larger ones get 413.",
    )
    metrics_token: str = Field(
        "",
        description="When set, GET /metrics on the API needs `Authorization: Bearer <token>`.",
    )
    flower_basic_auth: str = Field(
        "",
        description="Flower credentials, user:password[,user2:password2] (production: required).",
    )


class OperationsSettings(SettingsGroup):
    """Operations.

    Metrics, probes, Flower, housekeeping and the business time zone; see
    [operations](operations.md).
    """

    metrics_port: int = Field(
        9808,
        ge=0,
        le=65535,
        description="Worker metrics port (Celery/RQ master); 0: off. A port already taken is "
        "logged and skipped.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the worker metrics port binds (`0.0.0.0` in the compose stacks).",
    )
    health_timeout: float = Field(
        1.0, gt=0, le=30, description="Seconds each readiness/health dependency check may take."
    )
    shutdown_drain_seconds: float | None = Field(
        None,
        ge=0,
        le=300,
        description="After SIGTERM, seconds of readiness 503 before the server stops accepting.",
        json_schema_extra={"doc_default": "`5` in production, else `0`"},
    )
    flower_address: str = Field("127.0.0.1", description="Address Flower binds.")
    retention_days: int = Field(
        7, ge=1, le=3650, description="Days finished jobs (and their files) are kept."
    )
    recovery_queued_after: float = Field(
        1800.0, gt=0, description="Seconds pending/queued before a job is re-dispatched (once)."
    )
    stats_timezone: str = Field(
        "Europe/Paris",
        description="The business time zone: day boundaries of the daily figures and the "
        "times of Beat's schedule.",
    )

    @field_validator("stats_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"STATS_TIMEZONE: unknown time zone {value!r}") from exc
        return value

    def policy(self) -> HousekeepingPolicy:
        """Retention, recovery of stuck jobs, and the day boundaries of the daily figures."""
        return HousekeepingPolicy(
            retention=timedelta(days=self.retention_days),
            queued_after=timedelta(seconds=self.recovery_queued_after),
            zone=self.stats_timezone,
        )
