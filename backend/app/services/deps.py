"""What every service receives: the adapters, passed in by the composition root or a test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.domain.jobs import utcnow
from app.domain.ledger import JobRepository
from app.domain.mail import EmailDeliveryRepository, Mailer
from app.domain.ports import ArtifactStore, CallbackSender, JobDispatcher, JobObserver, Renderer
from app.domain.queues import ReportType
from app.domain.retry import RetryPolicy


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How jobs run, retry and report; the job settings the services act on.

    Attributes:
        max_attempts: Attempts per job, the first included.
        retry: The backoff between attempts.
        progress_interval: Seconds between two progress writes (heartbeats) of a running job.
        heartbeat_timeout: Seconds without a heartbeat after which a running job's worker is
            presumed lost.
        callback_attempts: Attempts before a callback is given up.
        lost_worker_checks: Times a delivery that found the job running under another worker
            comes back to look again.
        defer_max_seconds: Longest wait between two deliveries while the ledger does not answer.
        max_recipients: Recipients one job or schedule may name.
    """

    max_attempts: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress_interval: float = 1.0
    heartbeat_timeout: float = 30.0
    callback_attempts: int = 4
    lost_worker_checks: int = 5
    defer_max_seconds: float = 60.0
    max_recipients: int = 20


@dataclass(frozen=True, slots=True)
class MailPolicy:
    """How the notify step emails a finished job.

    Attributes:
        sender: The From of every message.
        base_url: The API's address, for download links when the store gives none.
        max_attempts: Attempts per recipient before a temporary failure is given up.
        attach_max_bytes: Reports up to this size are attached; larger ones are linked.
        link_seconds: How long a link the store signs (S3) stays valid.
        lease: A recipient ``sending`` for longer than this is claimed again (its sender
            died mid-send).
    """

    sender: str = "reports@localhost"
    base_url: str = "http://127.0.0.1:8000"
    max_attempts: int = 4
    attach_max_bytes: int = 10 * 1024 * 1024
    link_seconds: int = 7 * 86_400
    lease: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Mailing:
    """What the email part of the notify step needs: the mailer, the deliveries' ledger."""

    mailer: Mailer
    deliveries: EmailDeliveryRepository
    policy: MailPolicy = field(default_factory=MailPolicy)


@dataclass(frozen=True, slots=True)
class Deps:
    """The service layer's view of the world: ports only."""

    repo: JobRepository
    dispatcher: JobDispatcher
    store: ArtifactStore
    renderers: Mapping[ReportType, Renderer[Any]]
    observer: JobObserver
    policy: JobPolicy = field(default_factory=JobPolicy)
    clock: Callable[[], datetime] = utcnow
    worker_id: str = "local"
    stopping: Callable[[], bool] = _never
    callbacks: CallbackSender | None = None
    mail: Mailing | None = None  # None: jobs' recipients are not emailed (a test's fakes)
