"""The Celery app of the workers, Beat and Flower: the composition root's app, every task
registered on it, and the Beat schedule.

Here rather than in ``bootstrap``: the workers import the composition root, never the
other way round.
"""

from __future__ import annotations

from celery import Celery

from app import bootstrap
from app.core.config import Settings, get_settings
from app.workers.beat_schedule import BEAT_SCHEDULE, register_system_tasks
from app.workers.celery_tasks import register_report_tasks


def celery_worker_app(settings: Settings | None = None) -> Celery:
    """The worker's Celery app: every task and the Beat schedule."""
    settings = settings or get_settings()
    app = bootstrap.celery_app(settings, role="worker")
    app.conf.beat_schedule = BEAT_SCHEDULE
    register_report_tasks(app)
    register_system_tasks(app)
    return app
