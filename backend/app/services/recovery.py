"""Start-up recovery: no job a previous process left behind stays stuck."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.domain.queues import Backend
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.lost_worker import redispatch, take_back

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What start-up recovery did.

    Attributes:
        redispatched: Jobs dispatched again: waiting ones, and running ones taken back.
        failed: Running jobs whose worker was gone and whose attempts were spent.
        left_alone: Running jobs whose worker still lives.
    """

    redispatched: int = 0
    failed: int = 0
    left_alone: int = 0


def recover_unfinished(
    *, deps: Deps, backend: Backend, worker_alive: Callable[[str], bool]
) -> RecoveryReport:
    """Re-dispatch waiting jobs of ``backend``; re-run or fail those whose worker is gone.

    ``worker_alive`` tells whether the process that claimed a running job still lives;
    a job whose worker lives is left alone (another process is running it).
    """
    redispatched = failed = left_alone = 0
    for job in deps.repo.unfinished(backend=backend):
        current = job
        if job.status is JobStatus.RUNNING:
            if job.worker and worker_alive(job.worker):
                left_alone += 1
                continue
            taken = take_back(deps, job, why="The process running this job stopped.")
            if taken is None:  # another worker took it meanwhile
                continue
            if taken.status is JobStatus.FAILED:
                failed += 1
                continue
            current = taken
        if redispatch(deps, current, failed_event="report_job.recovery.dispatch_failed"):
            redispatched += 1
    report = RecoveryReport(redispatched, failed, left_alone)
    log.info("report_job.recovery.done", extra={"backend": backend.value, **asdict(report)})
    return report
