"""Processes, the ledger and the brokers: where the platform runs and what it talks to.

:class:`BrokerSettings` builds the Celery app's policy (:class:`CeleryPolicy`); the RQ
helpers and the Celery and RQ dispatchers take the group itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from app.core.settings.base import Environment, SettingsGroup
from app.core.settings.jobs import JobSettings
from app.core.settings.operations import OperationsSettings


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
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Addresses (comma-separated, `*` for any) whose `X-Forwarded-For` and "
        "`X-Forwarded-Proto` the API believes: the load balancer's. From any other peer the "
        "headers are ignored and the peer's own address is the client's.",
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

    def policy(
        self, *, jobs: JobSettings, process: ProcessSettings, operations: OperationsSettings
    ) -> CeleryPolicy:
        """The Celery app's configuration: these brokers, the jobs' limits, the business zone."""
        return CeleryPolicy(
            brokers=self,
            time_limit=jobs.longest_time_limit,
            longest_countdown=jobs.retry_backoff_max,
            max_tasks_per_child=jobs.celery_max_tasks_per_child,
            max_memory_per_child=jobs.celery_max_memory_per_child,
            timezone=operations.stats_timezone,
            reconnect_forever=process.environment is Environment.PRODUCTION,
        )


@dataclass(frozen=True, slots=True)
class CeleryPolicy:
    """What a Celery app is configured from (see :func:`app.core.celery_app.create_celery_app`).

    Attributes:
        brokers: The broker, result backend, timeouts and queue prefix.
        time_limit: The longest hard time limit of a render (the tasks' default).
        longest_countdown: The longest retry countdown (RETRY_BACKOFF_MAX).
        max_tasks_per_child: Tasks before a pool process is recycled.
        max_memory_per_child: KiB of resident memory before a pool process is replaced.
        timezone: Beat's schedule runs on the business day.
        reconnect_forever: A worker reconnects to its broker forever (production).
    """

    brokers: BrokerSettings
    time_limit: float
    longest_countdown: float
    max_tasks_per_child: int
    max_memory_per_child: int
    timezone: str
    reconnect_forever: bool
