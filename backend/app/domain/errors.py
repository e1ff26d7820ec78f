"""Errors with stable codes.

Every error the platform raises on purpose is an :class:`AppError` with a stable
``code``. The kind of error (a subclass family) tells an entrypoint how to answer:
the HTTP layer maps kinds to status codes, workers map them to retry decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from app.domain.jobs import ReportJob


class AppError(Exception):
    """Base of every deliberate error: a stable code and a message a person understands."""

    code: str = "APP_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(AppError):
    """The caller sent something the platform cannot accept (422)."""

    code = "INVALID_INPUT"


class InvalidParams(InvalidInput):
    """Report parameters out of bounds or not applicable to the report type."""

    code = "INVALID_PARAMS"


class NotFound(AppError):
    """The thing asked for does not exist, or is not the caller's to see (404)."""

    code = "NOT_FOUND"


class JobNotFound(NotFound):
    """No report job has this id, or it is not the caller's to see."""

    code = "JOB_NOT_FOUND"

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"No report job with id {job_id}.")


class Conflict(AppError):
    """The request is valid but conflicts with the job's current state (409)."""

    code = "CONFLICT"


class IllegalTransition(Conflict):
    """The job's status cannot legally move to the one asked for."""

    code = "ILLEGAL_TRANSITION"


class Unauthenticated(AppError):
    """No valid API key came with the request (401)."""

    code = "UNAUTHORIZED"


class Forbidden(AppError):
    """The caller is known but its role may not do this (403)."""

    code = "FORBIDDEN"


class RateLimited(AppError):
    """The caller spent its request budget; ``retry_after`` seconds until the next token (429)."""

    code = "RATE_LIMITED"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Too many requests; retry in {retry_after:.0f} s.")
        self.retry_after = retry_after


class IdempotencyConflict(Conflict):
    """The Idempotency-Key came back with a different request than its first."""

    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request; "
            "use a new key for a new report."
        )


class IdempotencyKeyTaken(Conflict):
    """Raised by the ledger: ``earlier``, another job of this owner, holds the key."""

    code = "IDEMPOTENCY_KEY_TAKEN"

    def __init__(self, earlier: ReportJob) -> None:
        super().__init__(f"Idempotency-Key {earlier.idempotency_key!r} is taken by {earlier.id}.")
        self.earlier = earlier


class SlotTaken(Conflict):
    """A schedule's slot already has its job (another ticker fired it first)."""

    code = "SLOT_TAKEN"

    def __init__(self, earlier: ReportJob) -> None:
        super().__init__(f"This slot already ran as job {earlier.id}.")
        self.earlier = earlier


class Unavailable(AppError):
    """A dependency the request needs cannot be reached right now (503)."""

    code = "SERVICE_UNAVAILABLE"


class RenderError(AppError):
    """A renderer failed; ``retryable`` says whether another attempt may succeed."""

    code = "RENDER_FAILED"

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable


class JobAlreadyFinished(Conflict):
    """Only an unfinished job can be cancelled; this one already finished."""

    code = "JOB_ALREADY_FINISHED"

    def __init__(self, job_id: UUID, status: str) -> None:
        super().__init__(
            f"Job {job_id} is already {status}; only unfinished jobs can be cancelled."
        )


class JobNotCompleted(Conflict):
    """A job's report can be downloaded only once the job completed."""

    code = "JOB_NOT_COMPLETED"

    def __init__(self, job_id: UUID, status: str) -> None:
        super().__init__(f"Job {job_id} is {status}; its report can be downloaded once completed.")


class LedgerUnavailable(Unavailable):
    """The job ledger (the database) does not answer; the request or delivery may retry."""

    code = "LEDGER_UNAVAILABLE"


class BackendUnavailable(Unavailable):
    """No backend can take the job now (broker failing, disabled, shutting down)."""

    code = "BACKEND_UNAVAILABLE"


class StorageUnavailable(Unavailable):
    """The artifact store does not answer: a render retries, a download answers 503."""

    code = "STORAGE_UNAVAILABLE"


class CallbackNotAllowed(InvalidInput):
    """Callbacks are disabled, or not allowed to that URL or host."""

    code = "CALLBACK_NOT_ALLOWED"


class CallbackFailed(AppError):
    """A callback delivery failed; ``retryable`` says whether to try again later."""

    code = "CALLBACK_FAILED"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Misconfigured(AppError):
    """The settings cannot work together; the process refuses to start."""

    code = "MISCONFIGURED"
