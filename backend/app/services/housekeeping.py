"""Housekeeping, run by Beat: retention, recovery of stuck jobs, a recorded health check.

Each periodic task runs at most once per *slot* (its scheduled time, the clock floored to
its period): the run is recorded under a unique (task, slot) before it does anything, so a
second Beat started by mistake, or a duplicate delivery, finds the slot taken and does
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.errors import Unavailable
from app.domain.jobs import ReportJob
from app.domain.operations import ComponentHealth, HousekeepingRepository, OpsRecorder
from app.domain.ports import ArtifactStore
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.lost_worker import (
    heartbeat_lost,
    is_stale,
    redispatch,
    stale_before,
    take_back,
)

log = logging.getLogger(__name__)

CLEANUP = "system.cleanup_jobs"
HEALTH = "system.health_check"
RECOVER = "system.recover_jobs"
DAILY = "system.daily_stats"

PERIODS = {
    CLEANUP: timedelta(hours=1),
    HEALTH: timedelta(minutes=5),
    RECOVER: timedelta(minutes=1),
}

_MAX_BATCHES = 50
_DISPATCH_FAILED = "housekeeping.recover.dispatch_failed"


@dataclass(frozen=True, slots=True)
class HousekeepingPolicy:
    """Housekeeping's settings.

    Attributes:
        retention: Finished jobs (and their files) older than this are deleted.
        queued_after: A Celery/RQ job pending or queued this long is dispatched again (once).
        zone: The statistics time zone, where the daily figures' days begin and end.
        batch: Jobs read per query by cleanup and recovery.
    """

    retention: timedelta = timedelta(days=7)
    queued_after: timedelta = timedelta(minutes=30)
    zone: str = "Europe/Paris"
    batch: int = 500


@dataclass(frozen=True, slots=True)
class Housekeeping:
    """What the periodic services need besides :class:`Deps`."""

    ops: HousekeepingRepository
    policy: HousekeepingPolicy
    recorder: OpsRecorder
    probe: Callable[[], Sequence[ComponentHealth]]


@dataclass(frozen=True, slots=True)
class PeriodicOutcome:
    """``ran`` is False when another run already had the slot."""

    task: str
    slot: datetime
    ran: bool
    result: Mapping[str, Any] = field(default_factory=dict)


def slot_of(now: datetime, period: timedelta) -> datetime:
    """The scheduled time ``now`` belongs to: ``now`` floored to ``period`` (UTC epoch)."""
    step = period.total_seconds()
    return datetime.fromtimestamp(now.timestamp() // step * step, UTC)


def run_periodic(
    *,
    deps: Deps,
    kit: Housekeeping,
    task: str,
    slot: datetime,
    action: Callable[[], Mapping[str, Any]],
) -> PeriodicOutcome:
    """Run ``action`` unless ``(task, slot)`` already ran; record the outcome either way."""
    if not kit.ops.claim_run(task, slot, now=deps.clock()):
        kit.recorder.periodic_run(task, "skipped")
        log.info("housekeeping.skipped", extra={"task": task, "slot": slot.isoformat()})
        return PeriodicOutcome(task, slot, ran=False)
    try:
        result = dict(action())
    except Exception as exc:
        error = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        kit.ops.finish_run(task, slot, now=deps.clock(), status="failed", result=error)
        kit.recorder.periodic_run(task, "failed")
        raise
    kit.ops.finish_run(task, slot, now=deps.clock(), status="done", result=result)
    kit.recorder.periodic_run(task, "done")
    log.info("housekeeping.done", extra={"task": task, "slot": slot.isoformat(), **result})
    return PeriodicOutcome(task, slot, ran=True, result=result)


# --------------------------------------------------------------------------- retention


def cleanup_expired(*, deps: Deps, kit: Housekeeping) -> PeriodicOutcome:
    """Delete finished jobs older than the retention, files first, then their rows."""
    now = deps.clock()
    before = now - kit.policy.retention
    return run_periodic(
        deps=deps,
        kit=kit,
        task=CLEANUP,
        slot=slot_of(now, PERIODS[CLEANUP]),
        action=lambda: _cleanup(deps, kit, before),
    )


def _cleanup(deps: Deps, kit: Housekeeping, before: datetime) -> dict[str, Any]:
    deleted = files = kept = 0
    for _ in range(_MAX_BATCHES):
        jobs = kit.ops.expired(before, limit=kit.policy.batch)
        removable = []
        for job in jobs:
            try:
                files += delete_files(deps.store, job)
            except (OSError, ValueError, Unavailable):
                # The row stays, so its files are never orphaned: the next run tries again.
                log.warning("housekeeping.cleanup.file_error", extra={"job_id": str(job.id)})
                kept += 1
                continue
            removable.append(job.id)
        deleted += kit.ops.delete_finished(removable)
        if len(jobs) < kit.policy.batch or not removable:
            break
    return {"deleted": deleted, "files": files, "kept": kept, "before": before.isoformat()}


def delete_files(store: ArtifactStore, job: ReportJob) -> int:
    """Delete the report and package of ``job``; returns how many it had."""
    stored = [a for a in (job.artifact, job.document) if a is not None]
    for artifact in stored:
        store.delete(artifact)
    return len(stored)


# --------------------------------------------------------------------------- recovery


def recover_stuck(*, deps: Deps, kit: Housekeeping) -> PeriodicOutcome:
    """Take back stuck jobs: those waiting too long, and those whose worker is gone.

    Re-dispatch jobs waiting too long (once); retry or fail running jobs whose heartbeat
    is older than the heartbeat timeout (their worker is gone).
    """
    now = deps.clock()
    return run_periodic(
        deps=deps,
        kit=kit,
        task=RECOVER,
        slot=slot_of(now, PERIODS[RECOVER]),
        action=lambda: {**_redispatch(deps, kit, now), **_lost(deps, kit, now)},
    )


def _redispatch(deps: Deps, kit: Housekeeping, now: datetime) -> dict[str, int]:
    redispatched = 0
    for job in kit.ops.stale_waiting(now - kit.policy.queued_after, limit=kit.policy.batch):
        if not redispatch(deps, job, failed_event=_DISPATCH_FAILED, now=now):
            continue
        kit.ops.mark_redispatched(job.id, now=now)
        deps.observer.job_event("redispatched", job)
        redispatched += 1
    return {"redispatched": redispatched}


def _lost(deps: Deps, kit: Housekeeping, now: datetime) -> dict[str, int]:
    """Take back the running Celery/RQ jobs whose heartbeat is stale.

    Stale as ``run_report``'s reclaim judges them; each is queued again (and dispatched)
    while attempts remain, else failed ``WORKER_LOST``.
    """
    timeout = deps.policy.heartbeat_timeout
    cutoff = stale_before(now, timeout)
    requeued = failed = 0
    # A heartbeat is never older than its claim: every stale job started before the cutoff.
    for job in kit.ops.running_since(cutoff):
        if not is_stale(job, now, timeout):
            continue
        # The update re-checks it all: a heartbeat since, or another worker's claim, wins.
        why = heartbeat_lost(timeout)
        moved = take_back(deps, job, why=why, stale_before=cutoff)
        if moved is None:
            continue
        if moved.status is JobStatus.FAILED:
            failed += 1
            continue
        requeued += 1
        # Still queued when no backend takes it: the next runs re-dispatch it.
        redispatch(deps, moved, failed_event=_DISPATCH_FAILED, now=now)
    return {"requeued": requeued, "failed": failed}


# --------------------------------------------------------------------------- health


def record_health(*, deps: Deps, kit: Housekeeping) -> PeriodicOutcome:
    """Check the database, brokers and workers; record the result (row and metrics)."""
    now = deps.clock()
    return run_periodic(
        deps=deps,
        kit=kit,
        task=HEALTH,
        slot=slot_of(now, PERIODS[HEALTH]),
        action=lambda: _health(deps, kit),
    )


def _health(deps: Deps, kit: Housekeeping) -> dict[str, Any]:
    components = kit.probe()
    for component in components:
        kit.recorder.component(component.name, ok=component.ok, latency_s=component.latency_s)
    workers = deps.dispatcher.workers()
    return {
        "healthy": all(c.ok for c in components),
        "components": [
            {
                "name": c.name,
                "ok": c.ok,
                "latency_ms": round(c.latency_s * 1000, 1),
                "detail": c.detail,
            }
            for c in components
        ],
        "workers": [
            {"backend": w.backend.value, "queue": w.queue.value, "workers": w.workers}
            for w in workers
        ],
    }
