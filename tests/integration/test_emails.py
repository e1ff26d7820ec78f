"""Emails of finished jobs through a real SMTP server (aiosmtpd on loopback), on the inline
backend and real Celery and RQ workers: each recipient's email arrives once, with the
report attached; a server outage is waited out, a refused recipient recorded."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from uuid import UUID

import pytest
from app import bootstrap
from app.api.schemas import JobOut
from app.db.emails import SqlEmailDeliveryRepository
from app.db.housekeeping import SqlHousekeepingRepository
from app.db.session import make_engine, make_sessions
from app.domain.jobs import ReportJob, utcnow
from app.domain.mail import DeliveryStatus, EmailDelivery, MailFailed
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.mail.smtp import SmtpMailer
from app.services.emails import message_id
from app.services.enqueue import enqueue_report
from app.services.notify import notify
from app.services.queries import get_job_with_emails

from tests.integration.workers import wait_for, wait_until
from tests.smtp import SmtpServer

pytestmark = pytest.mark.timeout(120)

RECIPIENTS = ("alice@example.com", "bob@example.org", "carol@example.net")


@pytest.fixture(params=["inline", "celery", "rq"])
def platform(
    request: pytest.FixtureRequest,
    containers: dict[str, bootstrap.Container],
    smtp_server: SmtpServer,
) -> Iterator[bootstrap.Container]:
    """The container that enqueues on this backend (its real worker running); the SMTP
    server up and refusing nobody, afterwards too."""
    if request.param != "inline":
        request.getfixturevalue(f"{request.param}_session_worker")
    container = containers[request.param]
    assert container.settings.mail.mail_backend == "smtp"
    yield container
    smtp_server.refused.clear()
    if not smtp_server.running:
        smtp_server.start()


def deliveries(container: bootstrap.Container, job_id: UUID) -> Sequence[EmailDelivery]:
    assert container.deps.mail is not None
    return container.deps.mail.deliveries.for_job(job_id)


def settled(
    container: bootstrap.Container, job: ReportJob, timeout: float = 60
) -> list[EmailDelivery]:
    """The job's deliveries once each is sent or failed."""
    rows: list[EmailDelivery] = []

    def final() -> bool:
        rows[:] = deliveries(container, job.id)
        return len(rows) == len(job.recipients) and all(r.status.final for r in rows)

    wait_until(final, timeout)
    return rows


def enqueue(container: bootstrap.Container, *recipients: str) -> ReportJob:
    return enqueue_report(
        deps=container.deps,
        report_type=ReportType.PDF,
        params={"pages": 2, "seed": 4},
        recipients=recipients,
    ).job


def test_each_recipient_gets_the_report_once_on_every_backend(
    platform: bootstrap.Container, smtp_server: SmtpServer
) -> None:
    container = platform
    job = enqueue(container, *RECIPIENTS)
    done = wait_for(container.deps.repo, job.id, timeout=60)
    assert done.status is JobStatus.COMPLETED
    assert done.artifact is not None
    rows = settled(container, job)
    assert {(r.recipient, r.status, r.attempts) for r in rows} == {
        (r, DeliveryStatus.SENT, 1) for r in RECIPIENTS
    }
    assert all(r.sent_at is not None for r in rows)
    assert all((r.last_reply or "").startswith("250 2.0.0 OK queued as") for r in rows)

    received = smtp_server.wait_for_job(job.id, 3)
    assert sorted(m.recipients for m in received) == sorted((r,) for r in RECIPIENTS)
    on_disk = container.deps.store.local_path(done.artifact)  # type: ignore[attr-defined]
    for mail in received:
        message, [recipient] = mail.message, mail.recipients
        assert message["To"] == recipient
        assert message["Subject"] == "Pdf report: completed"
        # (folded: it is longer than a line; mail clients unfold it)
        assert message["Message-ID"].strip() == message_id(
            done, recipient, container.settings.mail.mail_from
        )
        body = message.get_body(("plain",))
        assert body is not None
        assert f"The pdf report {job.id} completed" in body.get_content()
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == done.artifact.filename
        content = attachment.get_content()
        assert hashlib.sha256(content).hexdigest() == done.artifact.sha256
        assert content == on_disk.read_bytes()

    shown, emails = get_job_with_emails(deps=container.deps, job_id=job.id)
    answer = JobOut.of(shown, emails).model_dump(mode="json")
    assert sorted((e["recipient"], e["status"], e["attempts"]) for e in answer["emails"]) == [
        (r, "sent", 1) for r in sorted(RECIPIENTS)
    ]


def test_a_server_outage_is_waited_out_and_each_email_arrives_once(
    platform: bootstrap.Container, smtp_server: SmtpServer
) -> None:
    container = platform
    smtp_server.stop()
    job = enqueue(container, *RECIPIENTS[:2])
    try:
        tried = {DeliveryStatus.RETRYING, DeliveryStatus.FAILED}  # failed: the bug to catch
        wait_until(lambda: any(r.status in tried for r in deliveries(container, job.id)), 60)
    finally:
        smtp_server.start()
    rows = settled(container, job)
    assert {r.status for r in rows} == {DeliveryStatus.SENT}, rows
    assert max(r.attempts for r in rows) >= 2, rows
    received = smtp_server.wait_for_job(job.id, 2)
    time.sleep(1.5)  # a second copy would come within the backoff (RETRY_BACKOFF_MAX=2)
    assert len(smtp_server.for_job(job.id)) == 2
    assert sorted(m.recipients for m in received) == sorted((r,) for r in RECIPIENTS[:2])


def test_a_refused_recipient_is_recorded_and_the_others_served(
    platform: bootstrap.Container, smtp_server: SmtpServer
) -> None:
    container = platform
    smtp_server.refused.add("bob@example.org")
    job = enqueue(container, *RECIPIENTS)
    rows = {r.recipient: r for r in settled(container, job)}
    refused = rows.pop("bob@example.org")
    assert (refused.status, refused.attempts, refused.sent_at) == (DeliveryStatus.FAILED, 1, None)
    assert (refused.last_reply or "").startswith("550 5.1.1 <bob@example.org>")
    assert {(r.status, r.attempts) for r in rows.values()} == {(DeliveryStatus.SENT, 1)}
    received = smtp_server.wait_for_job(job.id, 2)
    assert sorted(m.recipients for m in received) == [
        ("alice@example.com",),
        ("carol@example.net",),
    ]


def test_a_duplicate_notify_step_sends_nothing_twice(
    platform: bootstrap.Container, smtp_server: SmtpServer
) -> None:
    container = platform
    job = enqueue(container, *RECIPIENTS[:2])
    settled(container, job)
    smtp_server.wait_for_job(job.id, 2)
    for _ in range(2):  # the step delivered again, as a broker may
        assert notify(deps=container.deps, job_id=job.id).kind == "skipped"
    time.sleep(0.5)
    assert len(smtp_server.for_job(job.id)) == 2
    assert {r.attempts for r in deliveries(container, job.id)} == {1}


def test_the_smtp_mailer_answers_for_the_recipient(smtp_server: SmtpServer) -> None:
    from email.message import EmailMessage

    mailer = SmtpMailer(smtp_server.host, smtp_server.port, timeout=5)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "r@x.example", "a@y.example", "hi"
    message["X-Report-Job"] = "smtp-mailer-test"
    message.set_content("hello")
    assert mailer.send(message, recipient="a@y.example").startswith("250 ")
    smtp_server.refused.add("gone@y.example")
    try:
        with pytest.raises(MailFailed) as refused:
            mailer.send(message, recipient="gone@y.example")
        assert refused.value.permanent
        assert refused.value.message.startswith("550 5.1.1")
    finally:
        smtp_server.refused.clear()
    smtp_server.stop()
    try:
        with pytest.raises(MailFailed) as down:
            mailer.send(message, recipient="a@y.example")
        assert not down.value.permanent
    finally:
        smtp_server.start()


def test_the_ledger_of_deliveries_on_sqlite_and_postgres(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        repo = SqlEmailDeliveryRepository(engine)
        job_id, now = UUID(int=int(time.time_ns())), utcnow()
        repo.create(job_id, ["a@x.example", "b@x.example"], now=now)
        repo.create(job_id, ["a@x.example", "b@x.example"], now=now)  # idempotent
        assert [(r.recipient, r.status) for r in repo.for_job(job_id)] == [
            ("a@x.example", DeliveryStatus.PENDING),
            ("b@x.example", DeliveryStatus.PENDING),
        ]
        claimed = repo.claim(job_id, "a@x.example", now=now, stale_before=now)
        assert claimed is not None
        assert (claimed.status, claimed.attempts) == (DeliveryStatus.SENDING, 1)
        assert repo.claim(job_id, "a@x.example", now=now, stale_before=now) is None  # fresh
        later = now + timedelta(minutes=10)
        reclaimed = repo.claim(job_id, "a@x.example", now=later, stale_before=later)
        assert reclaimed is not None
        assert reclaimed.attempts == 2  # its sender died
        late = {"status": DeliveryStatus.SENT, "reply": "250 ok", "now": later}
        assert repo.finish(job_id, "a@x.example", attempt=1, **late) is None  # type: ignore[arg-type]
        sent = repo.finish(job_id, "a@x.example", attempt=2, **late)  # type: ignore[arg-type]
        assert sent is not None
        assert (sent.status, sent.last_reply, sent.sent_at) == (
            DeliveryStatus.SENT,
            "250 ok",
            later,
        )
        assert repo.claim(job_id, "a@x.example", now=later, stale_before=later) is None  # sent
    finally:
        engine.dispose()


def test_deleting_finished_jobs_deletes_their_deliveries(
    containers: dict[str, bootstrap.Container], smtp_server: SmtpServer
) -> None:
    container = containers["inline"]
    job = enqueue(container, RECIPIENTS[0])
    wait_for(container.deps.repo, job.id)
    settled(container, job)
    ops = SqlHousekeepingRepository(make_sessions(container.engine))
    assert ops.delete_finished([job.id]) == 1
    assert deliveries(container, job.id) == []
