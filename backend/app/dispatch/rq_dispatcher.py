"""RQ backend: the same job ids on mirrored queue names, JSON-serialised, retried by RQ.

A job with a callback is enqueued as three RQ jobs chained by ``depends_on``: render on
``reports``, package on ``documents``, notify on ``notifications``. RQ job ids derive
from the ledger id, so cancellation can find them.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass

from redis import Redis
from rq import Queue as RqQueue
from rq import Retry, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.core.circuit import CircuitBreaker
from app.core.config import Settings
from app.core.logging import request_id_var
from app.dispatch.availability import Availability
from app.dispatch.base import BrokeredBackend
from app.domain.jobs import Backend, Queue, ReportJob, RetryPolicy

#: Job functions, by import path: the API never imports the worker module.
RUN_REPORT = "app.workers.rq_jobs.run_report_job"
POSTPROCESS = "app.workers.rq_jobs.postprocess_job"
NOTIFY = "app.workers.rq_jobs.notify_job"

FOLLOW_UPS = ("_document", "_notify")
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
_DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class RqQueueInfo:
    name: str
    queue: Queue
    depth: int
    workers: tuple[str, ...]


def redis_client(url: str, timeout: float) -> Redis:
    """A client that gives up quickly: connecting and each command are bounded."""
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(1.0, timeout * 2))


def rq_queue(connection: Redis, settings: Settings, queue: Queue) -> RqQueue:
    return RqQueue(
        f"{settings.queue_prefix}{queue.value}",
        connection=connection,
        serializer=JSONSerializer,
    )


def retry_intervals(policy: RetryPolicy, retries: int) -> list[int]:
    """RQ wants whole seconds: the policy's delays (with their jitter), rounded up."""
    return [math.ceil(policy.delay(n)) for n in range(1, retries + 1)]


def inspect_queues(connection: Redis, settings: Settings) -> list[RqQueueInfo]:
    """Depth and listening workers of each RQ queue. Raises if Redis does not answer."""
    connection.ping()
    infos = []
    for queue in Queue:
        rq = rq_queue(connection, settings, queue)
        workers = Worker.all(queue=rq, serializer=JSONSerializer)
        infos.append(RqQueueInfo(rq.name, queue, rq.count, tuple(sorted(w.name for w in workers))))
    return infos


class RqDispatcher(BrokeredBackend):
    """:class:`~app.dispatch.base.BrokeredBackend` over RQ."""

    backend = Backend.RQ

    def __init__(
        self, connection: Redis, settings: Settings, *, breaker: CircuitBreaker, retry: RetryPolicy
    ) -> None:
        self.connection = connection
        self._settings = settings
        self._retry = retry
        super().__init__(
            breaker=breaker,
            probe_interval=settings.availability_cache_seconds,
            probe_wait=1.0,
            cancel_grace=settings.cancel_grace_seconds,
        )

    def probe(self) -> Availability:
        consumers: Counter[Queue] = Counter()
        for info in inspect_queues(self.connection, self._settings):
            consumers[info.queue] += len(info.workers)
        return Availability(True, dict(consumers))

    def ping(self, timeout: float) -> None:
        """The client's own socket timeouts (``BROKER_TIMEOUT``) bound it already."""
        self.connection.ping()

    def publish(self, job: ReportJob) -> None:
        settings = self._settings
        retries = max(1, job.max_attempts)
        render = rq_queue(self.connection, settings, job.queue).enqueue_call(
            RUN_REPORT,
            args=(str(job.id),),
            job_id=str(job.id),
            timeout=math.ceil(settings.hard_time_limit(job.report_type.value)),
            retry=Retry(max=retries, interval=retry_intervals(self._retry, retries)),
            result_ttl=_DAY,
            failure_ttl=7 * _DAY,
            description=f"{job.report_type.value} report {job.id}",
            meta={"request_id": request_id_var.get()},
        )
        if job.callback_url is None:
            return
        document = rq_queue(self.connection, settings, Queue.DOCUMENTS).enqueue_call(
            POSTPROCESS,
            args=(str(job.id),),
            job_id=f"{job.id}_document",
            depends_on=render,
            timeout=600,
            result_ttl=_DAY,
        )
        attempts = settings.callback_max_attempts
        rq_queue(self.connection, settings, Queue.NOTIFICATIONS).enqueue_call(
            NOTIFY,
            args=(str(job.id),),
            job_id=f"{job.id}_notify",
            depends_on=document,
            timeout=120,
            retry=Retry(max=attempts, interval=retry_intervals(self._retry, attempts)),
            result_ttl=_DAY,
        )

    def withdraw(self, job: ReportJob) -> None:
        """``cancel_job`` for the waiting RQ jobs of this ledger job (render and follow-ups)."""
        for rq_id in (str(job.id), *(f"{job.id}{s}" for s in FOLLOW_UPS)):
            rq_job = self._fetch(rq_id)
            if rq_job is not None and rq_job.get_status(refresh=False) in _WAITING:
                with contextlib.suppress(InvalidJobOperation):  # cancelled meanwhile
                    rq_job.cancel()

    def stop_running(self, job: ReportJob) -> None:
        """The job did not stop at its checkpoint: have its worker kill the work horse."""
        rq_job = self._fetch(str(job.id))
        if rq_job is not None and rq_job.get_status(refresh=False) == JobStatus.STARTED:
            send_stop_job_command(self.connection, rq_job.id, serializer=JSONSerializer)

    def _fetch(self, rq_id: str) -> Job | None:
        try:
            return Job.fetch(rq_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return None
