"""Operations building blocks on their own: the metrics observer, fallback reasons, periodic
slots, daily figures, Flower's credentials check and the Beat schedule's routing."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from app.bootstrap import celery_app
from app.cli.celery_manager import flower_auth
from app.core import metrics_export
from app.core.config import Settings
from app.core.metrics import MetricsObserver, end_run, reason_kind
from app.domain.errors import Misconfigured
from app.domain.jobs import ReportJob
from app.domain.operations import JobTiming
from app.domain.params import parse_params
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.services.daily_stats import daily_figures, day_bounds, percentile
from app.services.housekeeping import slot_of
from prometheus_client import REGISTRY

NOW = datetime(2026, 3, 29, 10, 0, tzinfo=UTC)
LABELS = {"job_type": "excel", "queue": "reports", "backend": "none"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {**LABELS, **labels}) or 0.0


def job(**changes: object) -> ReportJob:
    base = ReportJob.new(
        report_type=ReportType.EXCEL,
        params=parse_params(ReportType.EXCEL, {}),
        max_attempts=3,
        now=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_observer_counts_each_final_status_once_and_tracks_active_runs() -> None:
    observer = MetricsObserver()
    before = {
        "completed": sample("report_jobs_total", status="completed"),
        "failed": sample("report_jobs_total", status="failed"),
        "retries": sample("report_jobs_retries_total"),
        "runs": sample("report_jobs_duration_seconds_count"),
        "waits": sample("report_jobs_queue_wait_seconds_count"),
        "active": sample("report_jobs_active"),
    }
    started = job(
        status=JobStatus.RUNNING,
        attempts=1,
        queued_at=NOW + timedelta(seconds=1),
        started_at=NOW + timedelta(seconds=3),
    )
    observer.job_event("started", started)
    observer.job_event("started", started)  # a duplicate event counts once
    assert sample("report_jobs_active") == before["active"] + 1
    observer.job_event("retrying", replace(started, status=JobStatus.RETRYING))
    assert sample("report_jobs_active") == before["active"]
    second = replace(started, attempts=2, started_at=NOW + timedelta(seconds=10))
    observer.job_event("started", second)  # a retry does not wait in the queue again
    done = replace(second, status=JobStatus.COMPLETED, finished_at=NOW + timedelta(seconds=12))
    observer.job_event("completed", done)
    observer.job_event("dispatch_failed", job(status=JobStatus.FAILED))

    assert sample("report_jobs_total", status="completed") == before["completed"] + 1
    assert sample("report_jobs_total", status="failed") == before["failed"] + 1
    assert sample("report_jobs_retries_total") == before["retries"] + 1
    assert sample("report_jobs_duration_seconds_count") == before["runs"] + 1
    assert sample("report_jobs_queue_wait_seconds_count") == before["waits"] + 1
    assert sample("report_jobs_active") == before["active"]


def test_a_run_ended_without_event_is_uncounted_after_its_task() -> None:
    observer = MetricsObserver()
    running = job(status=JobStatus.RUNNING, attempts=1, started_at=NOW)
    before = sample("report_jobs_active")
    observer.job_event("started", running)
    end_run(running.id)  # what the Celery task_postrun hook does
    end_run(running.id)
    assert sample("report_jobs_active") == before


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("circuit open after failed publishes", "circuit_open"),
        ("broker unreachable (ConnectionError: refused)", "broker_unreachable"),
        ("no worker consumes reports; no worker on rq either: the job waits", "no_worker"),
        ("not enabled", "not_enabled"),
        ("something new", "other"),
    ],
)
def test_fallback_reasons_are_a_bounded_label(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_slots_floor_the_clock_to_the_period() -> None:
    moment = datetime(2026, 3, 29, 10, 47, 31, tzinfo=UTC)
    assert slot_of(moment, timedelta(hours=1)) == datetime(2026, 3, 29, 10, 0, tzinfo=UTC)
    assert slot_of(moment, timedelta(minutes=5)) == datetime(2026, 3, 29, 10, 45, tzinfo=UTC)
    assert slot_of(moment, timedelta(minutes=1)) == datetime(2026, 3, 29, 10, 47, tzinfo=UTC)


def test_paris_days_have_23_or_25_hours_around_dst() -> None:
    start, end = day_bounds(date(2026, 3, 29), "Europe/Paris")
    assert start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert end - start == timedelta(hours=23)
    start, end = day_bounds(date(2026, 10, 25), "Europe/Paris")
    assert end - start == timedelta(hours=25)


def test_percentiles_interpolate() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(1, 101))), 0.95) == pytest.approx(95.05)


def test_daily_figures() -> None:
    def timing(kind: ReportType, status: JobStatus, seconds: float | None) -> JobTiming:
        finished = NOW + timedelta(seconds=seconds) if seconds is not None else None
        return JobTiming(kind, Backend.CELERY, status, NOW if finished else None, finished)

    figures = daily_figures(
        [
            timing(ReportType.PDF, JobStatus.COMPLETED, 10),
            timing(ReportType.PDF, JobStatus.COMPLETED, 20),
            timing(ReportType.PDF, JobStatus.FAILED, 30),
            timing(ReportType.DUMMY, JobStatus.CANCELLED, None),
        ],
        day=date(2026, 3, 28),
        zone="Europe/Paris",
    )
    assert figures["total"] == 4
    assert figures["failure_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert figures["p50_seconds"] == 20.0
    assert figures["p95_seconds"] == 29.0
    by_type = {(t["report_type"], t["backend"]): t for t in figures["by_type"]}
    assert by_type[("pdf", "celery")]["completed"] == 2
    assert by_type[("dummy", "celery")]["failure_rate"] is None
    assert {"report_type": "dummy", "status": "cancelled", "backend": "celery", "count": 1} in (
        figures["counts"]
    )


def test_flower_credentials() -> None:
    def settings(**values: object) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert flower_auth(settings(flower_basic_auth="ops:pw,ro:pw2")) == "ops:pw,ro:pw2"
    assert flower_auth(settings()) == ""  # development: allowed without
    with pytest.raises(Misconfigured, match="refuses to start"):
        flower_auth(settings(environment="production"))
    for bad in ("ops", "ops:", ":pw", "ops:pw,broken"):
        with pytest.raises(Misconfigured, match="user:password"):
            flower_auth(settings(flower_basic_auth=bad))


def test_beat_tasks_are_registered_and_routed_to_the_celery_queue() -> None:
    from app.workers.beat_schedule import BEAT_SCHEDULE
    from app.workers.celery_worker import celery_worker_app

    worker_app = celery_worker_app()

    client = celery_app(Settings(_env_file=None, queue_prefix="x-"))  # type: ignore[call-arg]
    assert worker_app.conf.beat_schedule == BEAT_SCHEDULE
    for entry in BEAT_SCHEDULE.values():
        assert entry["task"].startswith("system.")
        assert entry["task"] in worker_app.tasks
        assert client.amqp.router.route({}, entry["task"])["queue"].name == "x-celery"
    schedules = {e["task"]: e["schedule"] for e in BEAT_SCHEDULE.values()}
    midnight = schedules["system.daily_stats"]
    assert midnight.hour == {0}
    assert midnight.minute == {0}
    assert schedules["system.recover_jobs"].minute == set(range(60))


def test_each_worker_app_keeps_its_own_tasks() -> None:
    """Tests build several worker apps in one process: each keeps the tasks registered on
    it (Celery shares a task with every later app unless told not to, and warns of the
    duplicate names), and the API's publishing app registers none."""
    from app.core.celery_app import RUN_REPORT
    from app.workers.celery_worker import celery_worker_app

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = celery_worker_app(), celery_worker_app()
        assert first.tasks[RUN_REPORT] is not second.tasks[RUN_REPORT]
        assert first.tasks[RUN_REPORT].app is first
        client = celery_app(Settings(_env_file=None))  # type: ignore[call-arg]
        assert RUN_REPORT not in client.tasks


def test_private_metrics_dirs_of_dead_masters_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / "report-jobs-metrics-999999999-x1"
    mine = tmp_path / f"report-jobs-metrics-{os.getpid()}-x2"
    other = tmp_path / "something-else"
    for folder in (dead, mine, other):
        folder.mkdir()
    metrics_export._remove_orphans(tmp_path)
    assert not dead.exists()
    assert mine.exists()
    assert other.exists()
