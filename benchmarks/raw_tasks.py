"""Raw Celery: the same no-op on the same Redis, with no ledger, no API, no platform."""

from __future__ import annotations

from celery import Celery
from raw_jobs import QUEUE, REDIS_URL, record

app = Celery("raw", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)


@app.task(name="raw.noop")
def celery_noop(sent: float) -> None:
    record(sent)
