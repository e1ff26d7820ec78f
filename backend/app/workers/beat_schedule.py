"""Beat: the periodic ``system.*`` tasks (routed to the ``celery`` queue) and their schedule.

Crontab entries fire at the same wall-clock times in every Beat, and each task records its
run under (task, slot) before doing anything: two Beats started by mistake double nothing.
Report schedules are looked at every minute; each of their slots is one job, whoever fires it.
Times are in the Celery app's time zone, ``STATS_TIMEZONE`` (Europe/Paris by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery
from celery.schedules import crontab

from app.domain.queues import Backend
from app.services.daily_stats import compute_daily_stats
from app.services.deps import Deps
from app.services.housekeeping import (
    CLEANUP,
    DAILY,
    HEALTH,
    RECOVER,
    Housekeeping,
    PeriodicOutcome,
    cleanup_expired,
    record_health,
    recover_stuck,
)
from app.services.schedules import fire_due
from app.workers import worker_container

#: Beat's task that turns due schedule slots into jobs (each slot once, see services.schedules).
SCHEDULES = "system.run_schedules"

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "cleanup-jobs-hourly": {
        "task": CLEANUP,
        "schedule": crontab(minute="0"),
        "options": {"expires": 3000},
    },
    "health-check-5min": {
        "task": HEALTH,
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 240},
    },
    "daily-stats-midnight": {
        "task": DAILY,
        "schedule": crontab(minute="0", hour="0"),
        "options": {"expires": 3600},
    },
    "recover-jobs-every-minute": {
        "task": RECOVER,
        "schedule": crontab(minute="*"),
        "options": {"expires": 50},
    },
    "report-schedules-every-minute": {
        "task": SCHEDULES,
        "schedule": crontab(minute="*"),
        "options": {"expires": 50},
    },
}

Periodic = Callable[..., PeriodicOutcome]


def run(service: Periodic) -> dict[str, Any]:
    """Run one housekeeping service with this worker's container; a summary as the result."""
    container = worker_container(Backend.CELERY)
    deps: Deps = container.deps
    kit: Housekeeping = container.housekeeping
    outcome = service(deps=deps, kit=kit)
    return summary(outcome.task, outcome.ran, outcome.result)


def summary(task: str, ran: bool, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"task": task, "ran": ran, **{k: v for k, v in result.items() if k != "components"}}


def register_system_tasks(app: Celery) -> None:
    """Define the ``system.*`` tasks on ``app`` (the worker's Celery app)."""

    @app.task(name=CLEANUP, shared=False)
    def cleanup_jobs() -> dict[str, Any]:
        return run(cleanup_expired)

    @app.task(name=HEALTH, shared=False)
    def health_check() -> dict[str, Any]:
        return run(record_health)

    @app.task(name=DAILY, shared=False)
    def daily_stats() -> dict[str, Any]:
        return run(compute_daily_stats)

    @app.task(name=RECOVER, shared=False)
    def recover_jobs() -> dict[str, Any]:
        return run(recover_stuck)

    @app.task(name=SCHEDULES, shared=False)
    def run_schedules() -> dict[str, int]:
        container = worker_container(Backend.CELERY)
        return fire_due(deps=container.deps, kit=container.scheduling)
