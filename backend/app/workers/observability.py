"""What a worker process adds for operations: log context, its metrics port, live gauges.

Imported by the Celery task module (its signal handlers then apply to every Celery worker)
and by ``manage.py rq-worker``. Log lines written while a task runs carry its ``task_id``,
``backend``, ``queue`` and the ``request_id`` of the API request that created the job.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from celery import current_task, signals
from rq import get_current_job

from app.core.config import get_settings
from app.core.logging import add_log_context, request_id_var
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
    return {
        "task_id": job.id,
        "backend": "rq",
        "queue": job.origin,
        "request_id": (job.meta or {}).get("request_id"),
    }


add_log_context(celery_log_context)
add_log_context(rq_log_context)


def start_worker_metrics() -> None:
    """In a worker's master: multiprocess mode on (if the CLI did not), then the port."""
    if multiprocess_dir() is None:  # started as `celery -A app.workers.celery_main worker`
        prepare_multiprocess_dir()
    settings = get_settings()
    serve_metrics(settings.metrics_port, settings.metrics_host)


_tokens: dict[str, Any] = {}


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    start_worker_metrics()


@signals.worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    forget_process()


@signals.task_prerun.connect
def _task_start(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request_id = getattr(getattr(task, "request", None), "request_id", None)
    if task_id and isinstance(request_id, str):
        _tokens[task_id] = request_id_var.set(request_id)


@signals.task_postrun.connect
def _task_end(task_id: str | None = None, args: Any = None, **_: Any) -> None:
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        request_id_var.reset(token)
    if args:  # a job cancelled mid-run ends without an event: stop counting it here
        try:
            end_run(UUID(str(args[0])))
        except ValueError:
            return
