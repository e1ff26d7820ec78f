"""Log lines carrying the correlation, request and job ids of the current context.

``LOG_FORMAT=json`` writes one object a line through python-json-logger's formatter:
``ts``, ``level``, ``logger``, ``event``, then the context ids (``correlation_id``,
``request_id``, ``job_id``), a worker's fields (``task_id``, ``backend``, ``queue``) and
the event's own ``extra`` fields; ``exc`` holds a traceback. ``text`` is for humans.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from app.domain.context import correlation_id_var

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "Trace",
    "add_log_context",
    "correlation_id_var",
    "job_id_var",
    "request_id_var",
    "setup_logging",
]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)

#: Functions giving more context fields (a worker's task id, backend, queue) for each line.
LogContext = Callable[[], Mapping[str, object]]
_context_providers: list[LogContext] = []


def add_log_context(provider: LogContext) -> None:
    """Add fields from ``provider`` to every JSON line (idempotent)."""
    if provider not in _context_providers:
        _context_providers.append(provider)


#: The name of the correlation id in a message: Celery's own ``correlation_id`` (a message
#: property, the task id) would shadow a header of that name.
CARRIED_CORRELATION = "x_correlation_id"


@dataclass(frozen=True, slots=True)
class Trace:
    """The ids a job carries from the request that created it to every step it runs.

    Attributes:
        correlation_id: Ties the request, the job's steps and its deliveries together.
        request_id: The HTTP request that created the job, if one did.
    """

    correlation_id: str
    request_id: str | None = None

    @classmethod
    def current(cls, job_id: UUID | str) -> Trace:
        """This context's ids; outside a request (a schedule's tick, a recovery) the job id."""
        return cls(correlation_id_var.get() or str(job_id), request_id_var.get())

    @classmethod
    def carried(cls, fields: Mapping[str, Any] | None) -> Trace | None:
        """The ids a message carried (a Celery header, an RQ job's ``meta``), if any."""
        correlation = (fields or {}).get(CARRIED_CORRELATION)
        if not isinstance(correlation, str) or not correlation:
            return None
        request = (fields or {}).get("request_id")
        return cls(correlation, request if isinstance(request, str) else None)

    def fields(self) -> dict[str, str]:
        """The ids as message fields (the reverse of :meth:`carried`)."""
        found = {CARRIED_CORRELATION: self.correlation_id, "request_id": self.request_id}
        return {k: v for k, v in found.items() if v is not None}

    @contextmanager
    def bound(self) -> Iterator[Trace]:
        """Tag every log line (and every delivery) written inside with these ids."""
        correlation = correlation_id_var.set(self.correlation_id)
        request = request_id_var.set(self.request_id)
        try:
            yield self
        finally:
            request_id_var.reset(request)
            correlation_id_var.reset(correlation)


_CONTEXT: tuple[tuple[str, ContextVar[str | None]], ...] = (
    ("correlation_id", correlation_id_var),
    ("request_id", request_id_var),
    ("job_id", job_id_var),
)


def context_fields() -> dict[str, object]:
    """The context ids and the providers' fields that are set, in line order."""
    found: dict[str, object] = {k: v for k, var in _CONTEXT if (v := var.get()) is not None}
    for provider in _context_providers:
        found.update({k: v for k, v in provider().items() if v is not None})
    return found


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter, fields renamed to the platform's line shape.

    An ``extra`` field of the record wins over a context field of the same name.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "message": "event",
                "exc_info": "exc",
            },
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """``ts`` first, then the library's fields, the context ids, ``exc`` last."""
        log_data["ts"] = _timestamp(record)
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()
        exc = log_data.pop("exc", None)
        for key, value in context_fields().items():
            log_data.setdefault(key, value)
        if exc is not None:
            log_data["exc"] = exc


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: ``level logger: event key=value ...``.

    The event's fields, then its ``job_id`` and ``correlation_id`` when the context has them.
    """

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        for key, var in (("job_id", job_id_var), ("correlation_id", correlation_id_var)):
            value = var.get()
            if value is not None:
                extras.setdefault(key, value)
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()} {tail}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stdout in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
