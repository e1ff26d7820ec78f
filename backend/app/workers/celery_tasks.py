"""Celery tasks: parse the id, deliver the step, carry out the decision. Nothing else.

:func:`register_report_tasks` defines them on the worker's app, which the composition
root builds (:func:`app.workers.celery_worker.celery_worker_app`). Start a worker with
``python celery_manager.py worker reports 4`` (or
``celery -A app.workers.celery_main worker -Q reports``).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

from billiard.util import get_pdeathsig  # type: ignore[attr-defined]  # not in its stubs
from celery import Celery, Task, signals
from celery.worker import state as worker_state
from celery.worker.request import Request

from app.core.celery_app import NOTIFY, PING, POSTPROCESS, RUN_REPORT
from app.core.config import get_settings
from app.core.logging import setup_logging
from app.domain.jobs import JobError
from app.domain.queues import Backend, Step, worker_name
from app.services.pipeline import deliver, fail_lost_attempt
from app.workers import (
    close_worker_container,
    job_context,
    shutdown,
    worker_container,
    worker_deps,
)
from app.workers import observability as _observability  # noqa: F401  (signals, log context)


class ReportRequest(Request):
    """A render's delivery, in the worker's main process.

    A hard time limit kills the attempt's pool process; the main process records the job
    ``failed`` (``TIME_LIMIT_EXCEEDED``), naming that process: an attempt frozen past the
    heartbeat timeout may have lost its job to another worker since, and that worker's run
    must be left alone.
    """

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or worker_state.should_terminate or not self.args or self.worker_pid is None:
            return
        with job_context(str(self.args[0])) as job_id:
            error = JobError("TIME_LIMIT_EXCEEDED", f"The render was killed after {timeout:g}s.")
            fail_lost_attempt(
                deps=worker_deps(Backend.CELERY),
                job_id=job_id,
                error=error,
                worker=worker_name(Backend.CELERY, int(self.worker_pid)),
            )


class ReportTask(Task[[str], str]):
    """Its deliveries record a render killed at the hard time limit (see ReportRequest)."""

    Request = f"{__name__}:ReportRequest"


def register_report_tasks(app: Celery) -> None:
    """Define the render, document, notify and ping tasks on ``app``."""
    delivery: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": None,  # the delivery engine and the ledger's attempts bound it
        # shared=False, here and for the system tasks: a task belongs to the app it is
        # defined on (Celery's default adds it to every app made later in the process).
        "shared": False,
    }

    @app.task(name=RUN_REPORT, base=ReportTask, **delivery)
    def run_report_task(self: ReportTask, job_id: str) -> str:
        return _deliver(self, Step.RENDER, job_id)

    @app.task(name=POSTPROCESS, **delivery)
    def postprocess_task(self: Task[[str], str], job_id: str) -> str:
        return _deliver(self, Step.DOCUMENT, job_id)

    @app.task(name=NOTIFY, **delivery)
    def notify_task(self: Task[[str], str], job_id: str) -> str:
        return _deliver(self, Step.NOTIFY, job_id)

    @app.task(name=PING, shared=False)
    def ping_task() -> str:
        return "pong"


def _deliver(task: Task[[str], str], step: Step, job_id: str) -> str:
    """One delivery of ``step``; its next one, if decided, is a retry with a countdown."""
    with job_context(job_id) as uid:
        done = deliver(
            step, deps=worker_deps(Backend.CELERY), job_id=uid, deliveries=task.request.retries
        )
    if done.again is not None:
        raise task.retry(countdown=done.again, max_retries=None)
    return done.outcome.kind


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    process = get_settings().process
    setup_logging(process.log_level, process.log_format)


@signals.worker_init.connect
def _prepare(**_: Any) -> None:
    """Ready the main process to fork its pool, before it does: every child, and each one
    replacing a recycled child (``CELERY_MAX_TASKS_PER_CHILD``), starts at once.

    - The container is built here: a child starts with the ledger's statements compiled.
    - billiard gives each new child its parent-death signal through cffi when cffi is
      installed; cffi's first use in a process imports and compiles its C parser (about
      45 ms a child here). Used once here, every child inherits it ready.
    - Celery's pool runs ``gc.collect()`` before it forks each child. Over start-up's heap
      (imports, the container) that took 100-140 ms a child here, with the pool one
      process short meanwhile. Frozen, that heap is out of the collector's sight: the
      collection walks only what came after it (about 2 ms). Garbage already there stays
      for the life of the process; it is start-up's, once.
    """
    worker_container(Backend.CELERY)
    with contextlib.suppress(OSError):  # not on Linux: billiard sets no such signal
        get_pdeathsig()
    gc.freeze()


@signals.worker_shutting_down.connect
def _stopping(**_: Any) -> None:
    """Warm shutdown (main process): running renders stop at their next checkpoint."""
    shutdown.request_stop()


@signals.worker_process_shutdown.connect
def _close(**_: Any) -> None:
    close_worker_container()
