"""The adapters the composition root picks from the settings, each given its group or policy.

Nothing here reads a field to copy it: the groups build the policies
(``settings.<group>.policy(...)``) and the adapters take a group or a policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from celery import Celery
from sqlalchemy import Engine

from app.core.celery_app import Role, create_celery_app
from app.core.circuit import CircuitBreaker
from app.core.config import Settings
from app.core.metrics import record_circuit
from app.core.settings.delivery import MailSettings, StorageSettings
from app.db.emails import SqlEmailDeliveryRepository
from app.dispatch.asyncio_dispatcher import AsyncioDispatcher
from app.dispatch.base import BrokeredBackend, InProcessBackend
from app.dispatch.celery_dispatcher import CeleryDispatcher
from app.dispatch.inline_dispatcher import InlineDispatcher
from app.dispatch.rq_dispatcher import RqDispatcher, redis_client
from app.dispatch.sync_dispatcher import SyncDispatcher
from app.domain.errors import Misconfigured
from app.domain.mail import Mailer
from app.domain.ports import ArtifactStore
from app.mail.files import FileMailer
from app.mail.smtp import SmtpMailer
from app.services.deps import Mailing
from app.storage.local import LocalArtifactStore
from app.webhooks import HttpCallbackSender


def celery_app(settings: Settings, *, role: Role = "client") -> Celery:
    """A Celery app configured by the settings: a producer's (``client``) or a worker's."""
    return create_celery_app(settings.celery_policy(), role=role)


def artifact_store(settings: Settings, *, verify: bool = False) -> ArtifactStore:
    """STORAGE_BACKEND: the local directory, or the S3 bucket (see :func:`store`)."""
    return store(settings.storage, scratch=settings.scratch, verify=verify)


def store(storage: StorageSettings, *, scratch: Path, verify: bool = False) -> ArtifactStore:
    """The local directory, or the S3 bucket (reports written to ``scratch`` first).

    With ``verify`` (the API's start-up, and the CLI's before a worker starts), the bucket
    is asked for now: a missing one or refused credentials raise ``Misconfigured``. A
    worker's own container, built at its first job, does not ask: a storage outage then
    is the attempt's to retry (``StorageUnavailable``), not a configuration error.
    """
    if storage.storage_backend == "local":
        assert storage.artifact_dir is not None  # Settings gives it its default
        return LocalArtifactStore(storage.artifact_dir)
    from app.storage.s3 import S3ArtifactStore  # boto3: only where it is used

    if not storage.s3_bucket:
        raise Misconfigured("STORAGE_BACKEND=s3 needs S3_BUCKET.")
    bucket = S3ArtifactStore.of(storage, scratch=scratch)
    if verify:
        bucket.verify()
    return bucket


def in_process(
    settings: Settings, loop: asyncio.AbstractEventLoop | None
) -> InProcessBackend | None:
    """The backend running jobs in the API process: forced sync or asyncio, else the
    inline pool where allowed.
    """
    backend, workers = settings.routing.dispatch_backend, settings.process.inline_workers
    if backend == "sync":
        return SyncDispatcher(
            slots=settings.enqueue_slots, wait_budget=settings.jobs.defer_budget_seconds
        )
    if backend == "asyncio":
        return AsyncioDispatcher(workers, loop)
    return InlineDispatcher(workers) if settings.inline_allowed else None


def brokers(settings: Settings) -> list[BrokeredBackend]:
    """The Celery and RQ backends the settings enable (a forced one, or those of auto)."""
    routing, groups = settings.routing, settings.brokers
    mode = routing.dispatch_backend
    found: list[BrokeredBackend] = []
    if mode == "celery" or (mode == "auto" and routing.celery_enabled):
        found.append(
            CeleryDispatcher(
                celery_app(settings),
                groups,
                jobs=settings.jobs,
                routing=routing,
                breaker=breaker(settings, "broker.celery"),
            )
        )
    if mode == "rq" or (mode == "auto" and routing.rq_enabled):
        found.append(
            RqDispatcher(
                redis_client(groups.redis_url, groups.broker_timeout),
                groups,
                jobs=settings.jobs,
                routing=routing,
                breaker=breaker(settings, "broker.rq"),
            )
        )
    return found


def breaker(settings: Settings, name: str) -> CircuitBreaker:
    """A breaker named ``name`` whose state feeds the circuit metrics."""
    return CircuitBreaker.of(settings.routing.circuit(), name=name, listener=record_circuit)


def mailer(mail: MailSettings) -> Mailer:
    """MAIL_BACKEND: the SMTP server, or ``.eml`` files in the outbox."""
    if mail.mail_backend == "files":
        assert mail.mail_dir is not None  # Settings gives it its default
        return FileMailer(mail.mail_dir)
    return SmtpMailer.of(mail)


def mailing(settings: Settings, engine: Engine) -> Mailing:
    """The mailer, the deliveries' ledger and the mail policy of the notify step."""
    return Mailing(
        mailer=mailer(settings.mail),
        deliveries=SqlEmailDeliveryRepository(engine),
        policy=settings.mail.policy(process=settings.process),
    )


def callbacks(settings: Settings) -> HttpCallbackSender | None:
    """The callback sender, when CALLBACK_ALLOWED_HOSTS allows any.

    Raises:
        Misconfigured: callbacks on in production without CALLBACK_SECRET.
    """
    settings.callbacks.check(settings.process)
    return HttpCallbackSender.of(
        settings.callbacks, circuit=settings.routing.circuit(), on_circuit=record_circuit
    )
