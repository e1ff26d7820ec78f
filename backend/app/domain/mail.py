"""Email: the mailer port's vocabulary, the deliveries the ledger records, recipients' rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from email_validator import EmailNotValidError, validate_email

from app.domain.errors import AppError, InvalidInput


class InvalidRecipients(InvalidInput):
    """A recipient that is not a valid email address, or too many recipients."""

    code = "INVALID_RECIPIENTS"


def check_recipients(addresses: Iterable[str], *, limit: int) -> tuple[str, ...]:
    """``addresses`` normalised and without duplicates, if each is a valid email address.

    Raises:
        InvalidRecipients: an address is not valid (named), or there are more than ``limit``.
    """
    checked: dict[str, None] = {}
    for index, address in enumerate(addresses):
        try:
            valid = validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            raise InvalidRecipients(
                f"recipients[{index}]: {address!r} is not a valid email address ({exc})."
            ) from exc
        checked[valid.normalized] = None
    if len(checked) > limit:
        raise InvalidRecipients(f"recipients: at most {limit} addresses, not {len(checked)}.")
    return tuple(checked)


class DeliveryStatus(StrEnum):
    """Where one recipient's email stands."""

    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Sent or failed: never sent again."""
        return self in (DeliveryStatus.SENT, DeliveryStatus.FAILED)


@dataclass(frozen=True, slots=True)
class EmailDelivery:
    """One job's email to one recipient, as the ledger has it."""

    job_id: UUID
    recipient: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    updated_at: datetime
    last_reply: str | None = None
    sent_at: datetime | None = None


class MailFailed(AppError):
    """The mail server did not take a message; ``permanent`` for a 5xx reply."""

    code = "MAIL_FAILED"

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Mailer(Protocol):
    """Hands one message to the mail system (an SMTP server, a directory of files)."""

    def send(self, message: EmailMessage, *, recipient: str) -> str:
        """Deliver ``message`` to ``recipient`` (the envelope's only recipient).

        Returns:
            The server's reply (or where the message went), for the ledger.

        Raises:
            MailFailed: not taken; ``permanent`` when the server refused it for good (5xx).
        """
        ...


class EmailDeliveryRepository(Protocol):
    """The ledger's ``email_deliveries``: one row per (job, recipient); one transaction a call."""

    def create(self, job_id: UUID, recipients: Sequence[str], *, now: datetime) -> None:
        """A ``pending`` row for each recipient that has none yet (a second call adds nothing)."""
        ...

    def claim(
        self, job_id: UUID, recipient: str, *, now: datetime, stale_before: datetime
    ) -> EmailDelivery | None:
        """Move the row to ``sending`` and count an attempt, if it may be claimed.

        A row may be claimed when it is ``pending`` or ``retrying``, or ``sending`` since
        before ``stale_before`` (its sender died).

        Returns:
            The claimed row, or None: sent, failed, or being sent by someone else.
        """
        ...

    def finish(
        self,
        job_id: UUID,
        recipient: str,
        *,
        attempt: int,
        status: DeliveryStatus,
        reply: str | None,
        now: datetime,
    ) -> EmailDelivery | None:
        """Record the outcome of claimed attempt ``attempt`` with the server's last reply.

        ``status`` is ``sent``, ``retrying`` or ``failed``.

        Returns:
            The updated row, or None when the row is no longer that attempt's (another
            sender reclaimed it).
        """
        ...

    def for_job(self, job_id: UUID) -> Sequence[EmailDelivery]:
        """The job's deliveries, by recipient."""
        ...
