"""Raw Celery: the same no-op on the same Redis, with no ledger, no API, no platform.

With ``RAW_RESULT_BACKEND`` set (a worker's environment), the worker also records each
task's state, ``STARTED`` then ``SUCCESS``, in that result backend (see
:func:`use_result_backend`); the producer must then send with ``ignore_result=False``.
"""

from __future__ import annotations

import os

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


def use_result_backend(url: str) -> None:
    """Persist every task's status in ``url`` (e.g. ``db+postgresql+psycopg://...``)."""
    app.conf.update(result_backend=url, task_ignore_result=False, task_track_started=True)


if os.environ.get("RAW_RESULT_BACKEND"):
    use_result_backend(os.environ["RAW_RESULT_BACKEND"])
