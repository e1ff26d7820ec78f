"""Where a job runs: report types, backends and worker names, queues, pipeline steps."""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.domain.jobs import ReportJob


class ReportType(StrEnum):
    """The kinds of report; each has its parameters model in :data:`PARAMS_MODELS`."""

    DUMMY = "dummy"
    PDF = "pdf"
    EXCEL = "excel"
    ANALYSIS = "analysis"


class Backend(StrEnum):
    """What carries a job to the code that runs it: a broker, or the API process itself."""

    INLINE = "inline"
    CELERY = "celery"
    RQ = "rq"
    SYNC = "sync"  # in the request's thread: the answer carries the finished job
    ASYNCIO = "asyncio"  # a task on the API's event loop

    @property
    def in_process(self) -> bool:
        """The API process runs the job itself: no broker, nothing survives a restart."""
        return self in (Backend.INLINE, Backend.SYNC, Backend.ASYNCIO)

    @property
    def in_request(self) -> bool:
        """Dispatch returns only once the job has run (the enqueue answer is its outcome)."""
        return self is Backend.SYNC


HOST = socket.gethostname()


def worker_name(backend: Backend, pid: int | None = None) -> str:
    """How a worker process signs its claims in the ledger: ``backend@host:pid``."""
    return f"{backend.value}@{HOST}:{os.getpid() if pid is None else pid}"


class Queue(StrEnum):
    """The seed's dedicated queues; :attr:`priority` follows its table (higher runs first)."""

    REPORTS = "reports"
    DOCUMENTS = "documents"
    NOTIFICATIONS = "notifications"
    CELERY = "celery"

    @property
    def priority(self) -> int:
        """The broker priority of this queue's messages, from the seed's table."""
        return _QUEUE_PRIORITY[self]

    @property
    def concurrency(self) -> int:
        """Worker processes a worker of this queue runs unless told otherwise (the table)."""
        return _QUEUE_CONCURRENCY[self]


_QUEUE_PRIORITY = {Queue.REPORTS: 5, Queue.DOCUMENTS: 7, Queue.NOTIFICATIONS: 3, Queue.CELERY: 6}
_QUEUE_CONCURRENCY = {Queue.REPORTS: 2, Queue.DOCUMENTS: 1, Queue.NOTIFICATIONS: 1, Queue.CELERY: 1}


class Step(StrEnum):
    """A job's pipeline, declared once: render, then package, then notify.

    Package (for a job with a callback) runs on ``documents``, notify (the callback, the
    emails) on ``notifications``.
    Each backend translates :attr:`ReportJob.pipeline` its own way (a Celery chain, RQ
    ``depends_on``, a loop in the inline pool); every step is idempotent, so a retry may
    start over from the render.
    """

    RENDER = "render"
    DOCUMENT = "document"
    NOTIFY = "notify"

    def queue(self, job: ReportJob) -> Queue:
        """The queue of this step's message: the job's own for the render."""
        return job.queue if self is Step.RENDER else _STEP_QUEUE[self]

    def message_id(self, job: ReportJob) -> str:
        """The broker-side id of this step's message: the job id, suffixed after the render."""
        return str(job.id) if self is Step.RENDER else f"{job.id}_{self.value}"


_STEP_QUEUE = {Step.DOCUMENT: Queue.DOCUMENTS, Step.NOTIFY: Queue.NOTIFICATIONS}
