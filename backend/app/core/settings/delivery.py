"""What a finished job goes through: its storage, its callback, its emails, its schedule.

Each group builds its services' policy (:meth:`MailSettings.policy`,
:meth:`ScheduleSettings.policy`); the store, the callback sender and the mailer take the
group itself.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from app.core.settings.base import Environment, SettingsGroup
from app.core.settings.operations import OperationsSettings
from app.core.settings.runtime import ProcessSettings
from app.domain.errors import Misconfigured
from app.services.deps import MailPolicy
from app.services.schedules import SchedulePolicy


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

    def check(self, process: ProcessSettings) -> None:
        """Refuse unsigned callbacks in production.

        Raises:
            Misconfigured: callbacks are on in production without CALLBACK_SECRET.
        """
        if (
            self.callback_allowed_hosts
            and process.environment is Environment.PRODUCTION
            and not self.callback_secret
        ):
            raise Misconfigured("CALLBACK_SECRET is required in production when callbacks are on.")


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

    def base_url(self, process: ProcessSettings) -> str:
        """The API's address in links sent out."""
        return (self.public_base_url or f"http://{process.host}:{process.port}").rstrip("/")

    def policy(self, *, process: ProcessSettings) -> MailPolicy:
        """How the notify step emails a finished job."""
        return MailPolicy(
            sender=self.mail_from,
            base_url=self.base_url(process),
            max_attempts=self.email_max_attempts,
            attach_max_bytes=self.email_attach_max_bytes,
            # a sender is presumed dead once its exchanges (each SMTP_TIMEOUT) are long over
            lease=timedelta(seconds=max(60.0, 10 * self.smtp_timeout)),
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

    def policy(self, *, operations: OperationsSettings) -> SchedulePolicy:
        """The floor of a new schedule's frequency, and its zone when it names none."""
        return SchedulePolicy(
            min_interval=timedelta(seconds=self.schedule_min_interval_seconds),
            default_zone=operations.stats_timezone,
        )
