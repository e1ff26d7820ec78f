"""The RQ-era ticker: RQ's own cron scheduler sends :func:`tick_job` every minute.

``manage.py rq-cron`` runs it (one process; a second one doubles nothing: every part of
the tick is once per slot). The tick is an ordinary RQ job on the ``celery`` queue (the
system queue, as Beat's tasks), run by any RQ worker listening there.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq.cron import CronJob, CronScheduler
from rq.job import Job

from app.core.settings.runtime import BrokerSettings
from app.dispatch.rq_dispatcher import rq_queue
from app.domain.queues import Backend, Queue
from app.services.ticker import tick
from app.workers import worker_container

log = logging.getLogger(__name__)

#: Every minute, at second 0 (RQ evaluates the expression in UTC).
EVERY_MINUTE = "* * * * *"


def tick_job() -> dict[str, Any]:
    """Fire the due schedules and run the housekeeping, with this worker's container."""
    container = worker_container(Backend.RQ)
    return tick(deps=container.deps, kit=container.housekeeping, scheduling=container.scheduling)


class _JsonCronJob(CronJob):
    """A cron job enqueued as the platform's RQ jobs are (JSON, its queue's prefixed name):
    RQ's own enqueues with its default serializer, which the platform's workers refuse."""

    def __init__(self, brokers: BrokerSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._brokers = brokers

    def enqueue(self, connection: Redis) -> Job:
        assert self.func is not None
        queue = rq_queue(connection, self._brokers, Queue.CELERY)
        job = queue.enqueue(self.func, job_timeout=300, result_ttl=600, failure_ttl=86_400)
        log.info("rq_cron.tick.sent", extra={"queue": queue.name, "rq_job": job.id})
        return job


def cron_scheduler(connection: Redis, brokers: BrokerSettings) -> CronScheduler:
    """RQ's cron scheduler with the tick registered."""
    scheduler = CronScheduler(connection)
    queue_name = f"{brokers.queue_prefix}{Queue.CELERY.value}"
    job = _JsonCronJob(brokers, queue_name=queue_name, func=tick_job, cron=EVERY_MINUTE)
    scheduler.get_jobs().append(job)  # the list it runs (``register`` would build RQ's class)
    return scheduler
