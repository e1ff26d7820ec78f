"""Email of finished jobs: one message per recipient, each sent once.

The ledger's ``email_deliveries`` has a row per (job, recipient). Before it talks to the
mail server the step *claims* a recipient (``pending``/``retrying`` → ``sending``, one
attempt counted), then records ``sent``, ``retrying`` (a temporary failure, tried again
with the job's backoff up to ``EMAIL_MAX_ATTEMPTS``) or ``failed`` (a 5xx, or out of
attempts) with the server's reply. A recipient ``sent`` or ``failed`` is never claimed
again, so a retried or duplicated notify step sends nothing twice; a recipient left
``sending`` by a sender that died is claimed again after the lease. A message the server
took just before its sender died may then go out a second time, with the same
``Message-ID``: mail clients show it once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from uuid import UUID

from app.domain.context import correlation_id_var
from app.domain.errors import AppError, Unavailable
from app.domain.jobs import ReportJob
from app.domain.mail import DeliveryStatus, EmailDelivery, MailFailed
from app.domain.states import JobStatus
from app.services.delivery import Outcome
from app.services.deps import Deps, MailPolicy

log = logging.getLogger(__name__)

EMAILED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})


def send_emails(*, deps: Deps, job_id: UUID) -> Outcome:
    """Email a finished (completed or failed) job to each of its recipients, once.

    The outcome is ``retry`` (at the soonest recipient's wait) when a recipient waits for
    another attempt; else ``failed`` when one failed now; else ``sent`` when one was sent
    now; else ``skipped`` (nothing to do).
    """
    job = deps.repo.get(job_id)
    mail = deps.mail
    if mail is None or job is None or not job.recipients or job.status not in EMAILED:
        return Outcome("skipped", job)
    mail.deliveries.create(job.id, job.recipients, now=deps.clock())
    content: _Content | None = None
    waits: list[float] = []
    done: list[DeliveryStatus] = []
    for row in mail.deliveries.for_job(job.id):
        if row.status.final:
            continue
        now = deps.clock()
        claimed = mail.deliveries.claim(
            job.id, row.recipient, now=now, stale_before=now - mail.policy.lease
        )
        if claimed is None:  # another sender has it: look again once its lease is over
            since = row.updated_at if row.status is DeliveryStatus.SENDING else now
            waits.append(max((since + mail.policy.lease - now).total_seconds(), 1.0))
            continue
        if claimed.attempts > mail.policy.max_attempts:  # its last sender died mid-send
            error = MailFailed("Given up: the last attempt's sender died.", permanent=True)
            done.append(_record(deps, job, claimed, error=error)[0])
            continue
        try:
            content = content or _content(deps, job, mail.policy)
            message = compose(
                job,
                claimed.recipient,
                mail.policy,
                content,
                correlation_id=correlation_id_var.get(),
            )
            reply = mail.mailer.send(message, recipient=claimed.recipient)
        except AppError as exc:
            status, retry_in = _record(deps, job, claimed, error=exc)
            if retry_in is not None:
                waits.append(retry_in)
            done.append(status)
        else:
            done.append(_record(deps, job, claimed, reply=reply)[0])
    if waits:
        return Outcome("retry", job, retry_in=min(waits))
    if DeliveryStatus.FAILED in done:
        return Outcome("failed", job)
    return Outcome("sent" if done else "skipped", job)


def _record(
    deps: Deps,
    job: ReportJob,
    claimed: EmailDelivery,
    *,
    reply: str | None = None,
    error: AppError | None = None,
) -> tuple[DeliveryStatus, float | None]:
    """Write the attempt's outcome; count and log it.

    Returns:
        The status recorded, and the wait before the recipient's next attempt (None: none).
    """
    assert deps.mail is not None
    status, retry_in = DeliveryStatus.SENT, None
    if error is not None:
        temporary = isinstance(error, Unavailable) or (
            isinstance(error, MailFailed) and not error.permanent
        )
        limit = deps.mail.policy.max_attempts
        retry_in = deps.policy.retry.after(claimed.attempts, limit) if temporary else None
        status = DeliveryStatus.FAILED if retry_in is None else DeliveryStatus.RETRYING
        reply = error.message
    written = deps.mail.deliveries.finish(
        job.id,
        claimed.recipient,
        attempt=claimed.attempts,
        status=status,
        reply=reply,
        now=deps.clock(),
    )
    if written is None:  # reclaimed meanwhile: that sender's outcome counts
        log.warning("report_job.email.fenced", extra={"job_id": str(job.id)})
        return status, retry_in
    deps.observer.job_event(
        f"email_{status.value}",
        job,
        recipient=claimed.recipient,
        attempt=claimed.attempts,
        reply=reply,
    )
    return status, retry_in


@dataclass(frozen=True, slots=True)
class _Content:
    """What every recipient's message carries: the file, or a link and what it needs."""

    attachment: bytes | None = None
    link: str | None = None
    signed: bool = False  # the link is the store's own (expires), not the API's


def _content(deps: Deps, job: ReportJob, policy: MailPolicy) -> _Content:
    artifact = job.artifact
    if job.status is not JobStatus.COMPLETED or artifact is None:
        return _Content()
    if job.attach_file and artifact.size_bytes <= policy.attach_max_bytes:
        return _Content(attachment=b"".join(deps.store.read(artifact)))
    signed = deps.store.url_for(artifact, expires=policy.link_seconds)
    if signed is not None:
        return _Content(link=signed, signed=True)
    return _Content(link=f"{policy.base_url}/api/v1/reports/jobs/{job.id}/download")


def message_id(job: ReportJob, recipient: str, sender: str) -> str:
    """The same ``Message-ID`` for a (job, recipient) however often it is sent."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    return f"<report-{job.id}.{digest}@{domain}>"


def subject(job: ReportJob) -> str:
    """The email's subject: the report (a schedule's run by its UTC day) and how it ended."""
    name = f"{job.report_type.value} report"
    if job.slot is not None:
        name = f"Scheduled {name} of {job.slot.at.astimezone(UTC):%Y-%m-%d}"
    else:
        name = name[0].upper() + name[1:]
    if job.status is JobStatus.COMPLETED:
        return f"{name}: completed"
    return f"{name}: failed ({job.error.code if job.error else 'error'})"


def compose(
    job: ReportJob,
    recipient: str,
    policy: MailPolicy,
    content: _Content,
    *,
    correlation_id: str | None = None,
) -> EmailMessage:
    """The message of ``job`` to ``recipient``: what it is, its status, the file or a link.

    ``correlation_id`` (the job's) goes in ``X-Correlation-ID``, as on its callback.
    """
    message = EmailMessage()
    message["From"] = policy.sender
    message["To"] = recipient
    message["Subject"] = subject(job)
    message["Date"] = format_datetime(job.finished_at or job.updated_at)
    message["Message-ID"] = message_id(job, recipient, policy.sender)
    message["X-Report-Job"] = str(job.id)
    if correlation_id is not None:
        message["X-Correlation-ID"] = correlation_id
    lines = [
        "Hello,",
        "",
        f"The {job.report_type.value} report {job.id} {job.status.value}"
        + (f" at {job.finished_at:%Y-%m-%d %H:%M} UTC." if job.finished_at else "."),
    ]
    if job.slot is not None:
        at = job.slot.at.astimezone(UTC)
        lines.append(
            f"It is the run of schedule {job.slot.schedule_id} for {at:%Y-%m-%d %H:%M} UTC."
        )
    if job.status is JobStatus.FAILED:
        code, text = (job.error.code, job.error.message) if job.error else ("ERROR", "")
        lines.append(f"Error {code}: {text}".rstrip(": "))
    artifact = job.artifact
    if artifact is not None and content.attachment is not None:
        lines.append(f"The report is attached: {artifact.filename} ({artifact.size_bytes} bytes).")
    elif artifact is not None and content.link is not None:
        lines.append(f"Download the report ({artifact.filename}, {artifact.size_bytes} bytes):")
        lines.append(content.link)
        if content.signed:
            days = policy.link_seconds / 86_400
            lines.append(f"This link expires {days:g} day(s) after this email was sent.")
        else:
            lines.append("The download needs an API key of the report's owner (X-API-Key).")
    if artifact is not None:
        lines.append(f"sha256: {artifact.sha256}")
    lines += ["", "-- ", "MonAssurance reports"]
    message.set_content("\n".join(lines) + "\n")
    if artifact is not None and content.attachment is not None:
        maintype, _, subtype = artifact.content_type.partition("/")
        message.add_attachment(
            content.attachment,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=artifact.filename,
        )
    return message
