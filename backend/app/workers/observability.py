"""What a worker process adds for operations: log context, its metrics port, live gauges.

Imported by the Celery task module (its signal handlers then apply to every Celery worker)
and by ``manage.py rq-worker``. Log lines written while a task runs carry its ``task_id``,
``backend``, ``queue``, and the ``correlation_id`` and ``request_id`` the job's messages
carry (a Celery message's headers, an RQ job's ``meta``; see :class:`~app.core.logging.Trace`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from uuid import UUID

from celery import current_task, signals
from rq import get_current_job
from rq.job import Job

from app.core.config import get_settings
from app.core.logging import CARRIED_CORRELATION, Trace, add_log_context
from app.core.metrics import end_run
from app.core.metrics_export import (
    forget_process,
    multiprocess_dir,
    prepare_multiprocess_dir,
    serve_metrics,
)


def celery_log_context() -> dict[str, object]:
    """Fields of the Celery task running in this process, if any."""
    task = current_task
    request = getattr(task, "request", None) if task is not None else None
    if request is None or request.id is None:
        return {}
    delivery = request.delivery_info or {}
    return {"task_id": request.id, "backend": "celery", "queue": delivery.get("routing_key")}


def rq_log_context() -> dict[str, object]:
    """Fields of the RQ job running in this work horse, if any."""
    job = get_current_job()
    if job is None:
        return {}
    return {"task_id": job.id, "backend": "rq", "queue": job.origin}


add_log_context(celery_log_context)
add_log_context(rq_log_context)


@contextmanager
def rq_trace(job: Job) -> Iterator[None]:
    """Run an RQ job (in its work horse) under the ids its ``meta`` carries."""
    trace = Trace.carried(job.meta)
    if trace is None:
        yield
        return
    with trace.bound():
        yield


def start_worker_metrics() -> None:
    """In a worker's master: multiprocess mode on (if the CLI did not), then the port."""
    if multiprocess_dir() is None:  # started as `celery -A app.workers.celery_main worker`
        prepare_multiprocess_dir()
    operations = get_settings().operations
    serve_metrics(operations.metrics_port, operations.metrics_host)


_bound: dict[str, ExitStack] = {}


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    start_worker_metrics()


@signals.worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    forget_process()


@signals.task_prerun.connect
def _task_start(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Bind the ids the message's headers carry (custom headers are request attributes)."""
    request = getattr(task, "request", None)
    fields = {k: getattr(request, k, None) for k in (CARRIED_CORRELATION, "request_id")}
    trace = Trace.carried(fields)
    if task_id and trace is not None:
        stack = ExitStack()
        stack.enter_context(trace.bound())
        _bound[task_id] = stack


@signals.task_postrun.connect
def _task_end(task_id: str | None = None, args: Any = None, **_: Any) -> None:
    bound = _bound.pop(task_id or "", None)
    if bound is not None:
        bound.close()
    if args:  # a job cancelled mid-run ends without an event: stop counting it here
        try:
            end_run(UUID(str(args[0])))
        except ValueError:
            return
