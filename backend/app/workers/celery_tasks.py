"""Celery tasks: parse the id, call the service, map the outcome. Nothing else.

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
from app.core.settings.jobs import JobSettings
from app.domain.errors import LedgerUnavailable
from app.domain.jobs import Backend, JobError, worker_name
from app.services.delivery import next_delivery
from app.services.notify import notify
from app.services.pipeline import fail_lost_attempt
from app.services.postprocess import postprocess_report
from app.services.run_report import run_report
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


def register_report_tasks(app: Celery, jobs: JobSettings) -> None:
    """Define the render, document, notify and ping tasks on ``app``."""
    #: While the ledger is down, follow-up steps come back with backoff, never dropped.
    ledger_retry: dict[str, Any] = {
        "autoretry_for": (LedgerUnavailable,),
        "retry_backoff": True,
        "retry_backoff_max": jobs.defer_max_seconds,
    }
    delivery: dict[str, Any] = {"bind": True, "acks_late": True, "reject_on_worker_lost": True}
    # shared=False, here and for the system tasks: a task belongs to the app it is defined
    # on (Celery's default adds it to every app made later in the process).

    @app.task(name=RUN_REPORT, base=ReportTask, max_retries=None, shared=False, **delivery)
    def run_report_task(self: ReportTask, job_id: str) -> str:
        deps = worker_deps(Backend.CELERY)
        with job_context(job_id) as uid:
            outcome = run_report(deps=deps, job_id=uid)
        delay = next_delivery(outcome, policy=deps.policy, deliveries=self.request.retries)
        if delay is not None:  # the policy and the ledger's attempts bound it, not Celery
            raise self.retry(countdown=delay, max_retries=None)
        return outcome.kind

    @app.task(name=POSTPROCESS, max_retries=None, shared=False, **delivery, **ledger_retry)
    def postprocess_task(self: Task[[str], str], job_id: str) -> str:
        with job_context(job_id) as uid:
            return postprocess_report(deps=worker_deps(Backend.CELERY), job_id=uid).kind

    @app.task(name=NOTIFY, max_retries=None, shared=False, **delivery, **ledger_retry)
    def notify_task(self: Task[[str], str], job_id: str) -> str:
        with job_context(job_id) as uid:
            outcome = notify(deps=worker_deps(Backend.CELERY), job_id=uid)
        if outcome.kind == "retry":
            raise self.retry(countdown=outcome.retry_in or 1.0)
        return outcome.kind

    @app.task(name=PING, shared=False)
    def ping_task() -> str:
        return "pong"


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
