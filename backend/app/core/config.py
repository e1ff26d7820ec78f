"""All settings, read from the environment (and an optional ``.env``) in one place.

:class:`Settings` is made of groups (``app.core.settings``), one attribute each:
``settings.jobs``, ``settings.brokers``, ... A group holds its fields, their checks, what
is derived from them alone, and builds the policy its adapters or services take:
``settings.<group>.policy(...)``, given the other groups whose values it needs (never
single fields). What depends on several groups and is no policy is decided here.

Every field is still read from its own upper-case variable (``DATABASE_URL``, not
``LEDGER__DATABASE_URL``), and ``Settings(database_url=...)`` still takes any field by
its name: each keyword goes to the group that declares it. ``docs/configuration.md`` is
generated from the groups (``manage.py config-docs``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo

from app.core.settings.base import Environment, SettingsGroup
from app.core.settings.delivery import (
    CallbackSettings,
    MailSettings,
    ScheduleSettings,
    StorageSettings,
)
from app.core.settings.jobs import DEFAULT_TIME_LIMITS, SOFT_LIMIT_GRACE, JobSettings, soft_limit
from app.core.settings.operations import OperationsSettings, SecuritySettings
from app.core.settings.routing import RoutingSettings, TrafficSettings
from app.core.settings.runtime import BrokerSettings, CeleryPolicy, LedgerSettings, ProcessSettings

__all__ = [
    "DEFAULT_TIME_LIMITS",
    "SOFT_LIMIT_GRACE",
    "BrokerSettings",
    "CallbackSettings",
    "CeleryPolicy",
    "Environment",
    "JobSettings",
    "LedgerSettings",
    "MailSettings",
    "OperationsSettings",
    "ProcessSettings",
    "RoutingSettings",
    "ScheduleSettings",
    "SecuritySettings",
    "Settings",
    "SettingsGroup",
    "StorageSettings",
    "TrafficSettings",
    "get_settings",
    "soft_limit",
]


class Settings(BaseModel):
    """Platform settings: every group, and what depends on several of them.

    The groups are listed in the order ``docs/configuration.md`` shows them.
    """

    model_config = ConfigDict(extra="ignore")

    process: ProcessSettings
    ledger: LedgerSettings
    brokers: BrokerSettings
    routing: RoutingSettings
    traffic: TrafficSettings
    jobs: JobSettings
    storage: StorageSettings
    callbacks: CallbackSettings
    mail: MailSettings
    schedules: ScheduleSettings
    security: SecuritySettings
    operations: OperationsSettings

    def __init__(self, **values: Any) -> None:
        """Each group reads its own variables; a keyword named after a field goes to the
        group that declares it (``_env_file`` to every group)."""
        super().__init__(**_grouped(type(self), values))

    @classmethod
    def groups(cls) -> dict[str, type[SettingsGroup]]:
        """The groups by attribute name, in their order."""
        return {
            name: field.annotation
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, SettingsGroup)
        }

    @classmethod
    def fields(cls) -> dict[str, FieldInfo]:
        """Every setting by its name (the variable's, lower-case), group after group."""
        return {
            name: field
            for group in cls.groups().values()
            for name, field in group.model_fields.items()
        }

    @model_validator(mode="after")
    def _default_dirs(self) -> Self:
        if self.storage.artifact_dir is None:
            self.storage.artifact_dir = self.ledger.data_dir / "artifacts"
        if self.mail.mail_dir is None:
            self.mail.mail_dir = self.ledger.data_dir / "outbox"
        return self

    @model_validator(mode="after")
    def _auth_outside_development(self) -> Self:
        if self.security.auth_enabled is False and self.process.environment is not (
            Environment.DEVELOPMENT
        ):
            raise ValueError("AUTH_ENABLED=false is allowed only with ENVIRONMENT=development")
        return self

    @property
    def inline_allowed(self) -> bool:
        """Inline runs jobs when forced, when enabled, or by default in development."""
        return self.routing.inline_allowed(self.process)

    @property
    def auth_required(self) -> bool:
        """API keys are required unless switched off (development only)."""
        if self.security.auth_enabled is None:
            return self.process.environment is not Environment.DEVELOPMENT
        return self.security.auth_enabled

    @property
    def enqueue_slots(self) -> int:
        """How many enqueue requests of one API process run their blocking part at once."""
        return self.process.enqueue_concurrency or self.ledger.db_pool_size

    @property
    def auth_cache_ttl(self) -> float:
        """Seconds an authenticated key is cached per API process (0: not cached)."""
        if self.security.auth_cache_seconds is not None:
            return self.security.auth_cache_seconds
        return 5.0 if self.process.environment is Environment.PRODUCTION else 0.0

    @property
    def outbox(self) -> Path:
        return self.mail.mail_dir or self.ledger.data_dir / "outbox"

    @property
    def base_url(self) -> str:
        """The API's address in links sent out (email)."""
        return self.mail.base_url(self.process)

    @property
    def ticker_in_api(self) -> bool:
        """The API process runs the periodic tick: when asked, or by default in development."""
        if self.schedules.api_ticker is not None:
            return self.schedules.api_ticker
        return self.process.environment is Environment.DEVELOPMENT

    @property
    def artifacts(self) -> Path:
        return self.storage.artifact_dir or self.ledger.data_dir / "artifacts"

    @property
    def scratch(self) -> Path:
        """Where reports are written before they are uploaded (S3)."""
        return self.ledger.data_dir / "scratch"

    @property
    def drain_seconds(self) -> float:
        """How long readiness says 503 before a stopping API closes its listener."""
        if self.operations.shutdown_drain_seconds is not None:
            return self.operations.shutdown_drain_seconds
        return 5.0 if self.process.environment is Environment.PRODUCTION else 0.0

    def celery_policy(self) -> CeleryPolicy:
        """The Celery app's policy, from the brokers and what it takes of the other groups."""
        return self.brokers.policy(jobs=self.jobs, process=self.process, operations=self.operations)


def _grouped(settings_cls: type[Settings], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (fields by name, or whole groups) as one instance per group."""
    values = dict(values)
    shared = {"_env_file": values.pop("_env_file")} if "_env_file" in values else {}
    grouped: dict[str, Any] = {}
    for name, group in settings_cls.groups().items():
        if name in values:
            grouped[name] = values.pop(name)
            continue
        own = {key: values.pop(key) for key in list(values) if key in group.model_fields}
        grouped[name] = group(**shared, **own)
    return grouped


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
