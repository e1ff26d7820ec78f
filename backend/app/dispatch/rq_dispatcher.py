"""RQ backend: the same job ids on mirrored queue names, JSON-serialised.

Each step of the job's pipeline is one RQ job, chained by ``depends_on`` (render, then
for a job with a callback package and notify). RQ job ids are the steps' message ids,
derived from the ledger id, so cancellation can find them. A step delivered again is the
same RQ job, scheduled by the job function with the delay the delivery engine decided
(:mod:`app.workers.rq_jobs`); nothing is fixed at enqueue.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue as RqQueue
from rq import Retry, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.core.circuit import CircuitBreaker
from app.core.logging import Trace
from app.core.settings.jobs import JobSettings
from app.core.settings.routing import RoutingSettings
from app.core.settings.runtime import BrokerSettings
from app.dispatch.availability import Availability
from app.dispatch.base import BrokeredBackend
from app.domain.jobs import ReportJob
from app.domain.queues import Backend, Queue, Step

#: The job function of each pipeline step, by import path: the API never imports it.
FUNCTIONS = {
    Step.RENDER: "app.workers.rq_jobs.run_report_job",
    Step.DOCUMENT: "app.workers.rq_jobs.postprocess_job",
    Step.NOTIFY: "app.workers.rq_jobs.notify_job",
}
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
_DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class RqQueueInfo:
    """One RQ queue: its name, our queue, how many jobs wait in it, its workers' names."""

    name: str
    queue: Queue
    depth: int
    workers: tuple[str, ...]


def redis_client(url: str, timeout: float) -> Redis:
    """A client that gives up quickly: connecting and each command are bounded."""
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(1.0, timeout * 2))


def rq_queue(connection: Redis, brokers: BrokerSettings, queue: Queue) -> RqQueue:
    """The RQ queue of ``queue``: its name prefixed (``QUEUE_PREFIX``), JSON-serialised."""
    return RqQueue(
        f"{brokers.queue_prefix}{queue.value}",
        connection=connection,
        serializer=JSONSerializer,
    )


def inspect_queues(connection: Redis, brokers: BrokerSettings) -> list[RqQueueInfo]:
    """Depth and listening workers of each RQ queue. Raises if Redis does not answer."""
    connection.ping()
    infos = []
    for queue in Queue:
        rq = rq_queue(connection, brokers, queue)
        workers = Worker.all(queue=rq, serializer=JSONSerializer)
        infos.append(RqQueueInfo(rq.name, queue, rq.count, tuple(sorted(w.name for w in workers))))
    return infos


class RqDispatcher(BrokeredBackend):
    """:class:`~app.dispatch.base.BrokeredBackend` over RQ."""

    backend = Backend.RQ

    def __init__(
        self,
        connection: Redis,
        brokers: BrokerSettings,
        *,
        jobs: JobSettings,
        routing: RoutingSettings,
        breaker: CircuitBreaker,
    ) -> None:
        """Enqueue on ``connection``.

        ``brokers``: the queues' prefix; ``jobs``: the time limits and the stop backstop's
        grace; ``routing``: how often the workers are probed.
        """
        self.connection = connection
        self._brokers = brokers
        self._jobs = jobs
        super().__init__(
            breaker=breaker,
            probe_interval=routing.availability_cache_seconds,
            probe_wait=routing.first_probe_wait,
            cancel_grace=jobs.cancel_grace_seconds,
        )

    def probe(self) -> Availability:
        """How many workers listen on each of our queues; raises if Redis does not answer."""
        consumers: Counter[Queue] = Counter()
        for info in inspect_queues(self.connection, self._brokers):
            consumers[info.queue] += len(info.workers)
        return Availability(True, dict(consumers))

    def ping(self, timeout: float) -> None:
        """The client's own socket timeouts (``BROKER_TIMEOUT``) bound it already."""
        self.connection.ping()

    def publish(self, job: ReportJob) -> None:
        """Enqueue each step of the job's pipeline as an RQ job depending on the one before."""
        previous: Job | None = None
        meta = Trace.current(job.id).fields()  # every step's RQ job; its retries keep it
        for step in job.pipeline:
            previous = rq_queue(self.connection, self._brokers, step.queue(job)).enqueue_call(
                FUNCTIONS[step],
                args=(str(job.id),),
                job_id=step.message_id(job),
                depends_on=previous,
                result_ttl=_DAY,
                meta=meta,
                **self._options(step, job),
            )

    def _options(self, step: Step, job: ReportJob) -> dict[str, Any]:
        """Time limit of one step, and RQ's redelivery of a delivery lost with its horse.

        The job functions never raise (their decisions are returned), so RQ's own retry
        acts only when a work horse dies mid-delivery (SIGKILL, out of memory): the step is
        enqueued again at once, and the delivery engine takes it from there (a render
        finds its job running, waits for the heartbeat to go stale, then reclaims it). The
        ledger's attempts bound how often a job can lose its worker, hence the same bound.
        """
        lost = Retry(max=job.max_attempts)
        if step is Step.RENDER:
            return {
                "timeout": math.ceil(self._jobs.hard_time_limit(job.report_type.value)),
                "retry": lost,
                "failure_ttl": 7 * _DAY,
                "description": f"{job.report_type.value} report {job.id}",
            }
        return {"timeout": 600 if step is Step.DOCUMENT else 120, "retry": lost}

    def withdraw(self, job: ReportJob) -> None:
        """``cancel_job`` for the waiting RQ jobs of this ledger job (every step)."""
        for step in Step:
            rq_job = self._fetch(step.message_id(job))
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
