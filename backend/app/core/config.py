"""All settings, read from the environment (and an optional ``.env``) in one place.

:class:`Settings` is made of groups, one class each (ledger, brokers, routing, jobs,
callbacks, security, operations): a group holds its fields, their checks and what is
derived from them alone; what depends on several groups is decided in :class:`Settings`.
Every field is still read from its own upper-case variable and reached as
``settings.<name>``. ``docs/configuration.md`` is generated from these classes.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain.errors import InvalidInput
from app.domain.jobs import ReportType
from app.domain.traffic import TrafficSplit

# processing_time may reach 3600 s: the hard limits leave room for the render itself.
DEFAULT_TIME_LIMITS: dict[str, float] = {
    ReportType.DUMMY.value: 3700.0,
    ReportType.PDF.value: 3900.0,
    ReportType.EXCEL.value: 3900.0,
    ReportType.ANALYSIS.value: 3900.0,
}


_TYPES = frozenset(t.value for t in ReportType)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsGroup(BaseSettings):
    """Base of the groups: each field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")


class ProcessSettings(SettingsGroup):
    """Processes and logs.

    The API's listener and worker processes, and what they log.
    """

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="Development is the only one where API keys may be off and jobs run inline "
        "by default; production Celery and RQ workers reconnect to their broker forever.",
    )
    host: str = Field("127.0.0.1", description="Where `make run` / `manage.py serve` listen.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `make run` / `manage.py serve`.")
    api_workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes of `manage.py serve` (--workers)."
    )
    enqueue_concurrency: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Enqueue requests one API process hands to its thread pool at once (their "
        "ledger write and publish); the others wait on the event loop. The default gives each "
        "a pooled connection.",
        json_schema_extra={"doc_default": "`DB_POOL_SIZE`"},
    )
    inline_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads running inline jobs in the API process (the inline pool; the "
        "asyncio backend's renders).",
    )
    log_level: str = Field("INFO", description="Log level of the API and the workers.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="`json`: one object a line (python-json-logger), with request_id, "
        "correlation_id and job_id; `text`: for humans.",
    )


class LedgerSettings(SettingsGroup):
    """Ledger and files.

    The job ledger (the source of truth) and the process's own files.
    """

    data_dir: Path = Field(
        Path("data"), description="The SQLite file and the artifacts live here by default."
    )
    database_url: str = Field(
        "",
        description="The ledger, a SQLAlchemy URL: `postgresql://…` or `postgresql+psycopg://…` "
        "for PostgreSQL (psycopg 3); empty means a SQLite file under DATA_DIR.",
        json_schema_extra={"doc_default": "`sqlite:///DATA_DIR/reports.db`"},
    )
    db_pool_size: int = Field(
        5, ge=1, le=100, description="SQLAlchemy pool (PostgreSQL), per process."
    )
    db_max_overflow: int = Field(
        10, ge=0, le=100, description="Connections beyond DB_POOL_SIZE, per process."
    )

    @model_validator(mode="after")
    def _ledger_paths(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'reports.db').resolve()}"
        return self


class BrokerSettings(SettingsGroup):
    """Brokers.

    Redis (RQ, and Celery's broker by default) or RabbitMQ for Celery; see
    [migration](migration.md).
    """

    redis_url: str = Field(
        "redis://localhost:6379/0", description="Redis: RQ, and the Celery broker by default."
    )
    celery_broker_url: str = Field(
        "",
        description="Celery broker: `redis://…` or `amqp://user:pass@host:5672//`; empty means "
        "REDIS_URL.",
        json_schema_extra={"doc_default": "`REDIS_URL`"},
    )
    celery_result_backend: str = Field(
        "",
        description="Celery result backend; empty: none (the ledger keeps outcomes). Set only "
        "for external tools.",
    )
    broker_timeout: float = Field(
        0.5, gt=0, le=10, description="Seconds to connect to a broker or wait for workers' replies."
    )
    celery_visibility_timeout: int = Field(
        7200,
        ge=1,
        description="Redis broker: seconds before an unacked message is redelivered; must "
        "exceed the longest hard limit and RETRY_BACKOFF_MAX (else workers and API refuse to "
        "start).",
    )
    queue_prefix: str = Field(
        "", description="Prefix of every Celery and RQ queue name (isolates environments)."
    )

    @model_validator(mode="after")
    def _celery_broker(self) -> Self:
        if not self.celery_broker_url:
            self.celery_broker_url = self.redis_url
        return self

    @property
    def celery_broker_is_redis(self) -> bool:
        return urlsplit(self.celery_broker_url).scheme in ("redis", "rediss")


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


#: Seconds a render stopped at its soft limit has, at least, to record its failure and ask
#: for its retry before the hard limit kills it (0.8 s, 10 % of an 8 s limit, was once too
#: little on a loaded machine: the attempt was killed and recorded TIME_LIMIT_EXCEEDED).
SOFT_LIMIT_GRACE = 2.0


def soft_limit(hard: float) -> float:
    """The soft limit under ``hard``: 90 % of it, at least ``SOFT_LIMIT_GRACE`` seconds below
    it, and never under half of it."""
    return round(max(min(hard * 0.9, hard - SOFT_LIMIT_GRACE), hard / 2), 3)


class StorageSettings(SettingsGroup):
    """Storage.

    Where finished reports live: a local directory or an S3-compatible bucket; see
    [storage](storage.md).
    """

    artifact_dir: Path | None = Field(
        None,
        description="Where finished reports are stored.",
        json_schema_extra={"doc_default": "`DATA_DIR/artifacts`"},
    )
    storage_backend: Literal["local", "s3"] = Field(
        "local",
        description="Where finished reports live: `local` (ARTIFACT_DIR, one disk shared by the "
        "API and the workers) or `s3` (an S3-compatible bucket; no shared disk).",
    )
    s3_endpoint_url: str = Field(
        "",
        description="The S3-compatible service (`http://minio:9000`); empty: AWS S3. Credentials "
        "come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or boto3's credential chain.",
    )
    s3_bucket: str = Field("", description="The bucket (it must exist: checked at start-up).")
    s3_region: str = Field("us-east-1", description="The bucket's region (request signing).")
    s3_path_style: bool = Field(
        True,
        description="Path-style addressing (`endpoint/bucket/key`), as self-hosted servers want; "
        "false: virtual-hosted style.",
    )
    s3_multipart_threshold: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=5 * 1024**3,
        description="Reports larger than this (bytes) are uploaded in parts of this size, each "
        "checked, aborted as a whole on failure or cancellation (AWS S3: at least 5 MiB).",
    )
    s3_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds to connect to, and to wait for, the storage."
    )
    download_redirect: bool = Field(
        False,
        description="Downloads answer 307 to a presigned URL of the storage instead of streaming "
        "through the API (s3 only; ownership and status are checked first).",
    )
    s3_public_url: str = Field(
        "",
        description="The storage's address as download clients reach it, for presigned URLs "
        "(`https://files.example.com`); empty: S3_ENDPOINT_URL. Signing needs no call to it.",
    )
    download_url_seconds: int = Field(
        60, ge=1, le=604_800, description="How long a presigned download URL is valid."
    )


class CallbackSettings(SettingsGroup):
    """Callbacks.

    Webhooks a job's submitter may ask for; see [API](api.md).
    """

    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts a callback_url may target; `*`: any host with public "
        "addresses only; empty: callbacks refused.",
    )
    callback_secret: str = Field(
        "",
        description="HMAC-SHA256 key signing callback bodies; required in production when "
        "callbacks are on.",
    )
    callback_timeout: float = Field(5.0, gt=0, le=60, description="Seconds per callback POST.")
    callback_max_attempts: int = Field(
        4, ge=1, le=20, description="Attempts before a callback is given up (3 retries)."
    )

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value


class MailSettings(SettingsGroup):
    """Email.

    Reports emailed to their recipients by the notification step: through an SMTP server,
    or written as `.eml` files (the development default); see [schedules](schedules.md).
    """

    mail_backend: Literal["files", "smtp"] = Field(
        "files",
        description="`files`: each message is written to MAIL_DIR as an `.eml` file (nothing is "
        "sent); `smtp`: sent through SMTP_HOST.",
    )
    mail_dir: Path | None = Field(
        None,
        description="Where the `files` mailer writes its messages.",
        json_schema_extra={"doc_default": "`DATA_DIR/outbox`"},
    )
    mail_from: str = Field(
        "MonAssurance reports <reports@localhost>", description="The From of every message."
    )
    smtp_host: str = Field("localhost", description="The SMTP server (mail submission).")
    smtp_port: int = Field(25, ge=1, le=65535, description="Its port (587 STARTTLS, 465 TLS).")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "none",
        description="`starttls`: upgrade the connection; `tls`: implicit TLS from the start.",
    )
    smtp_user: str = Field("", description="Login, when the server asks for one.")
    smtp_password: str = Field("", description="Password of SMTP_USER.")
    smtp_timeout: float = Field(10.0, gt=0, le=300, description="Seconds per SMTP exchange.")
    email_attach_max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=0,
        le=50 * 1024 * 1024,
        description="Reports up to this size are attached; larger ones are sent as a link.",
    )
    email_max_recipients: int = Field(
        20, ge=1, le=500, description="Recipients one job or schedule may name."
    )
    email_max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="Attempts per recipient before a temporary SMTP failure is given up (3 "
        "retries).",
    )
    public_base_url: str = Field(
        "",
        description="The API's address as email readers reach it, for download links with "
        "local storage (`https://reports.example.com`).",
        json_schema_extra={"doc_default": "`http://HOST:PORT`"},
    )


class ScheduleSettings(SettingsGroup):
    """Schedules.

    Reports on a calendar and the ticker that fires them (with the housekeeping); see
    [schedules](schedules.md).
    """

    schedule_min_interval_seconds: int = Field(
        3600,
        ge=60,
        le=31 * 86_400,
        description="A schedule firing more often than this (its shortest gap) is refused.",
    )
    api_ticker: bool | None = Field(
        None,
        description="Run the periodic tick (due schedules, housekeeping) in the API process. "
        "Beat or `manage.py rq-cron` do it where they run; every tick is once per slot, so "
        "running several is safe.",
        json_schema_extra={"doc_default": "unset: on in development only"},
    )
    api_ticker_seconds: float = Field(
        20.0, gt=0, le=300, description="Seconds between two ticks of the API's ticker."
    )


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


class Settings(
    ProcessSettings,
    LedgerSettings,
    BrokerSettings,
    RoutingSettings,
    TrafficSettings,
    JobSettings,
    StorageSettings,
    CallbackSettings,
    MailSettings,
    ScheduleSettings,
    SecuritySettings,
    OperationsSettings,
):
    """Platform settings: every group, and what depends on several of them."""

    @model_validator(mode="after")
    def _artifact_dir(self) -> Self:
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        return self

    @model_validator(mode="after")
    def _auth_outside_development(self) -> Self:
        if self.auth_enabled is False and self.environment is not Environment.DEVELOPMENT:
            raise ValueError("AUTH_ENABLED=false is allowed only with ENVIRONMENT=development")
        return self

    @property
    def inline_allowed(self) -> bool:
        """Inline runs jobs when forced, when enabled, or by default in development."""
        if self.dispatch_backend != "auto":
            return self.dispatch_backend == "inline"
        if self.inline_fallback is not None:
            return self.inline_fallback
        return self.environment is Environment.DEVELOPMENT

    @property
    def auth_required(self) -> bool:
        """API keys are required unless switched off (development only)."""
        if self.auth_enabled is None:
            return self.environment is not Environment.DEVELOPMENT
        return self.auth_enabled

    @property
    def enqueue_slots(self) -> int:
        """How many enqueue requests of one API process run their blocking part at once."""
        return self.enqueue_concurrency or self.db_pool_size

    @property
    def auth_cache_ttl(self) -> float:
        """Seconds an authenticated key is cached per API process (0: not cached)."""
        if self.auth_cache_seconds is not None:
            return self.auth_cache_seconds
        return 5.0 if self.environment is Environment.PRODUCTION else 0.0

    @property
    def outbox(self) -> Path:
        return self.mail_dir or self.data_dir / "outbox"

    @property
    def base_url(self) -> str:
        """The API's address in links sent out (email)."""
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def ticker_in_api(self) -> bool:
        """The API process runs the periodic tick: when asked, or by default in development."""
        if self.api_ticker is not None:
            return self.api_ticker
        return self.environment is Environment.DEVELOPMENT

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def drain_seconds(self) -> float:
        """How long readiness says 503 before a stopping API closes its listener."""
        if self.shutdown_drain_seconds is not None:
            return self.shutdown_drain_seconds
        return 5.0 if self.environment is Environment.PRODUCTION else 0.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
