"""Email: the mailer port's vocabulary, the deliveries the ledger records, recipients' rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from email_validator import EmailNotValidError, validate_email

from app.domain.errors import AppError, InvalidInput


class InvalidRecipients(InvalidInput):
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
