"""Beat: two real ``celery_manager.py beat`` processes and a real worker, and the cadence.

The runtime test starts two Beats (a mistake the platform must absorb) on the real beat
configuration (``app.workers.celery_worker.celery_worker_app()``: task names, the ``celery`` queue,
options) with one change: a scheduler that makes every entry due each second instead of
on its crontab, so that a few seconds show many deliveries of each task. Slots stay the
documented periods (the minute, 5 minutes, the hour): each task must run once per slot,
every other delivery skipped, and cleanup and recovery must do their work on the ledger
and the disk. The cadence itself is asserted on the schedule entries Beat is given.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from app import bootstrap
from app.db.housekeeping import SqlHousekeepingRepository
from app.domain.states import JobStatus
from app.services.housekeeping import CLEANUP, DAILY, HEALTH, PERIODS, RECOVER
from app.workers.beat_schedule import SCHEDULES
from celery.beat import PersistentScheduler
from celery.schedules import crontab

from tests.integration.ops import wait_until
from tests.integration.test_housekeeping import add_job, files_of, finished_job
from tests.integration.workers import (
    WorkerProcess,
    event_lines,
    start_celery_worker,
)

SYSTEM = (HEALTH, RECOVER, CLEANUP, DAILY)
LOST = "celery@gone:1"


class EverySecond(PersistentScheduler):
    """Beat's scheduler over the real schedule, each entry due every second."""

    def merge_inplace(self, b: dict[str, dict[str, Any]]) -> None:
        fast = {name: {**entry, "schedule": timedelta(seconds=1)} for name, entry in b.items()}
        super().merge_inplace(fast)


def start_beat(
    env: dict[str, str], work_dir: Path, name: str, *, every_second: bool = True
) -> WorkerProcess:
    """``celery_manager.py beat`` with its own schedule file (its own DATA_DIR); by default
    on :class:`EverySecond`, else on the real schedule's crontabs."""
    beat_env = {**env, "DATA_DIR": str(work_dir / name)}
    command = ["celery_manager.py", "beat"]
    if every_second:
        command += ["-S", f"{__name__}:EverySecond"]
    return WorkerProcess(name, command, beat_env, work_dir / f"{name}.log").start(
        "beat: Starting..."
    )


def sent(beat: WorkerProcess, task: str) -> int:
    return len(re.findall(rf"Sending due task \S+ \({re.escape(task)}\)", beat.logs()))


def outcomes(logs: str, task: str) -> tuple[int, int]:
    """(done, skipped) runs of ``task`` in a worker's log."""
    return logs.count(f"housekeeping.done task={task} "), logs.count(
        f"housekeeping.skipped task={task} "
    )


def handled(logs: str, task: str) -> bool:
    return logs.count(f"Task {task}[") == 2 * sum(outcomes(logs, task))  # received, succeeded


@pytest.mark.timeout(120)
def test_two_beats_run_each_task_once_per_slot_and_housekeeping_does_its_work(
    own: tuple[dict[str, str], bootstrap.Container], work_dir: Path
) -> None:
    env, container = own
    deps = container.deps
    ops = container.housekeeping.ops
    assert isinstance(ops, SqlHousekeepingRepository)
    now = datetime.now(UTC)
    retention = timedelta(days=container.settings.operations.retention_days)
    expired = finished_job(deps, now - retention - timedelta(days=2))
    young = finished_job(deps, now - retention + timedelta(days=1))
    expired_files = files_of(deps, expired)
    assert len(expired_files) == 2
    queued_after = timedelta(seconds=container.settings.operations.recovery_queued_after)
    lost_message = add_job(deps, now - queued_after - timedelta(minutes=5))  # never dispatched
    silent = now - timedelta(seconds=deps.policy.heartbeat_timeout + 30)
    lost_worker = add_job(deps, silent - timedelta(seconds=1))
    assert deps.repo.transition(lost_worker.id, JobStatus.RUNNING, now=silent, worker=LOST)

    worker = start_celery_worker(env, work_dir, queues="celery,reports", concurrency=2)
    try:
        beats: list[WorkerProcess] = []
        try:
            beats.extend(start_beat(env, work_dir, f"beat-{n}") for n in (1, 2))

            def busy_enough(logs: str, beats: list[WorkerProcess]) -> bool:
                jobs = [deps.repo.get(j.id) for j in (lost_message, lost_worker)]
                return (
                    all(sent(b, t) >= 3 for b in beats for t in SYSTEM)
                    and all(outcomes(logs, t)[1] >= 3 for t in SYSTEM)
                    and all(j is not None and j.status.terminal for j in jobs)
                )

            deadline = time.monotonic() + 45
            while not busy_enough(worker.logs(), beats):
                if time.monotonic() > deadline:
                    state = [deps.repo.get(j.id) for j in (lost_message, lost_worker)]
                    pytest.fail(
                        f"not done in 45 s: {state}\n{beats[0].logs()[-1500:]}\n"
                        f"{worker.logs()[-4000:]}"
                    )
                time.sleep(0.2)
        finally:
            for beat in beats:
                beat.stop()
        # Beats stopped: count once every delivery received has been handled.
        wait_until(lambda: all(handled(worker.logs(), t) for t in SYSTEM), timeout=20)
        logs = worker.logs()

        for task in SYSTEM:
            runs = ops.runs(task)
            done, skipped = outcomes(logs, task)
            assert runs, task
            assert all(status == "done" for _, status, _ in runs), (task, runs)
            assert done == len(runs), (task, done, runs)  # once per slot...
            assert skipped >= 3, (task, skipped)  # ...however many Beats sent it
            if task in PERIODS:  # the daily figures' slot is the day that ended
                period = PERIODS[task].total_seconds()
                assert all(slot.timestamp() % period == 0 for slot, _, _ in runs), runs

        # Recovery: the job whose message was lost is re-dispatched once and runs once;
        # the job whose worker is gone is queued again and completed by this worker.
        redispatched = deps.repo.get(lost_message.id)
        assert redispatched is not None
        assert (redispatched.status, redispatched.attempts) == (JobStatus.COMPLETED, 1)
        assert len(event_lines(logs, "report_job.redispatched", lost_message.id)) == 1
        assert len(event_lines(logs, "report_job.started", lost_message.id)) == 1
        rerun = deps.repo.get(lost_worker.id)
        assert rerun is not None
        assert (rerun.status, rerun.attempts) == (JobStatus.COMPLETED, 2)
        assert rerun.worker not in (None, LOST)
        assert len(event_lines(logs, "report_job.started", lost_worker.id)) == 1

        # Cleanup: the expired job's row and files are gone; the young one is kept.
        first_cleanup = ops.runs(CLEANUP)[0][2]
        assert first_cleanup is not None
        assert (first_cleanup["deleted"], first_cleanup["files"]) == (1, 2)
        assert deps.repo.get(expired.id) is None
        assert not any(p.exists() for p in expired_files)
        assert not any(p.parent.exists() for p in expired_files)
        assert deps.repo.get(young.id) is not None
        assert all(p.exists() for p in files_of(deps, young))

    finally:
        worker.stop()


def test_the_beat_schedule_is_the_documented_cadence() -> None:
    """Hourly cleanup at :00, health every 5 minutes, recovery and report schedules every
    minute, daily figures at midnight, in Europe/Paris: the entries the ``beat`` command's
    app is given."""
    from app.workers.celery_worker import celery_worker_app

    app = celery_worker_app()

    entries = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert set(entries) == {CLEANUP, HEALTH, RECOVER, DAILY, SCHEDULES}
    every_hour, every_day = set(range(24)), set(range(1, 32))
    expected = {
        CLEANUP: ({0}, every_hour),
        HEALTH: (set(range(0, 60, 5)), every_hour),
        RECOVER: (set(range(60)), every_hour),
        DAILY: ({0}, {0}),
        SCHEDULES: (set(range(60)), every_hour),
    }
    for task, (minutes, hours) in expected.items():
        schedule = entries[task]["schedule"]
        assert isinstance(schedule, crontab), task
        assert (schedule.minute, schedule.hour) == (minutes, hours), task
        assert schedule.day_of_month == every_day, task
        assert schedule.month_of_year == set(range(1, 13)), task
        assert schedule.day_of_week == set(range(7)), task
        assert (
            entries[task]["options"]["expires"]
            < {**PERIODS, DAILY: timedelta(days=1), SCHEDULES: timedelta(minutes=1)}[
                task
            ].total_seconds()
        ), task  # a late delivery expires before the next one is due
    assert app.conf.timezone == "Europe/Paris"
    # The slots a run is recorded under are these periods.
    assert {
        CLEANUP: timedelta(hours=1),
        HEALTH: timedelta(minutes=5),
        RECOVER: timedelta(minutes=1),
    } == PERIODS
