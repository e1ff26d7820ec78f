"""Report schedules fired by every kind of ticker at once, on real processes and PostgreSQL.

Two real ``celery_manager.py beat`` processes (their real schedule: the schedules entry
every minute at second 0), RQ's own cron scheduler (``manage.py rq-cron``), and the API's
ticker (a :class:`~app.services.ticker.Ticker` thread, every 2 s) all fire the same
ledger's schedules, with a Celery and an RQ worker taking the jobs. Across two slots of
one-minute schedules: one job per slot, and a pause, an edit and a delete made while the
tickers run take effect at the next slot.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from app import bootstrap
from app.domain.jobs import ReportJob
from app.domain.ledger import JobFilter
from app.domain.schedules import Schedule
from app.domain.states import JobStatus
from app.services.schedules import (
    Scheduling,
    create_schedule,
    delete_schedule,
    fire_due,
    update_schedule,
)

from tests.integration.test_beat import start_beat
from tests.integration.workers import (
    WorkerProcess,
    own_ledger,
    settings_from,
    start_celery_worker,
    start_rq_worker,
)

EVERY_MINUTE = "* * * * *"


def runs(container: bootstrap.Container, schedule: Schedule) -> list[ReportJob]:
    page = container.deps.repo.list_jobs(JobFilter(schedule_id=schedule.id), limit=50, after=None)
    return sorted(page.items, key=lambda j: j.slot.at if j.slot else j.created_at)


def new(container: bootstrap.Container, name: str, cron: str) -> Schedule:
    fields = {
        "name": name,
        "report_type": "dummy",
        "cron": cron,
        "recipients": [f"{name}@example.com"],
    }
    return create_schedule(
        deps=container.deps, kit=container.scheduling, owner="tickers", fields=fields
    )


def wait_for(what: str, predicate: object, timeout: float, logs: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name}\n{w.logs()[-2500:]}" for w in logs)
            pytest.fail(f"{what}: not within {timeout:g} s\n{tails}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_ticker_together_fires_each_slot_once_and_edits_apply_at_the_next_tick(
    work_dir: Path,
) -> None:
    with own_ledger(work_dir, "tick", SCHEDULE_MIN_INTERVAL_SECONDS="60") as env:
        container = bootstrap.build(settings_from(env, api_ticker_seconds=2))
        processes: list[WorkerProcess] = []
        ticker = container.ticker()
        assert ticker is not None
        try:
            processes.append(start_celery_worker(env, work_dir, concurrency=2))
            processes.append(start_rq_worker(env, work_dir))
            processes.extend(
                start_beat(env, work_dir, f"beat-{n}", every_second=False) for n in (1, 2)
            )
            processes.append(
                WorkerProcess(
                    "rq-cron", ["manage.py", "rq-cron"], env, work_dir / "cron.log"
                ).start("starting...")
            )
            ticker.start()

            kept = new(container, "kept", EVERY_MINUTE)
            paused = new(container, "paused", EVERY_MINUTE)
            edited = new(container, "edited", "0 0 1 1 *")  # next January: not in this test
            deleted = new(container, "deleted", EVERY_MINUTE)
            first_slot = kept.next_run_at
            assert first_slot is not None

            wait_for(
                "the first slot of each one-minute schedule",
                lambda: all(len(runs(container, s)) == 1 for s in (kept, paused, deleted)),
                timeout=90,
                logs=processes,
            )
            # While the tickers run: pause one, make one fire every minute, delete one.
            kit, deps = container.scheduling, container.deps
            update_schedule(
                deps=deps, kit=kit, schedule_id=paused.id, owner=None, changes={"active": False}
            )
            update_schedule(
                deps=deps,
                kit=kit,
                schedule_id=edited.id,
                owner=None,
                changes={"cron": EVERY_MINUTE},
            )
            delete_schedule(kit=kit, schedule_id=deleted.id, owner=None)
            edited_at = datetime.now(UTC)

            second_slot = first_slot + timedelta(minutes=1)
            wait_for(
                "the second slot",
                lambda: len(runs(container, kept)) == 2 and len(runs(container, edited)) == 1,
                timeout=90,
                logs=processes,
            )
            # Late tickers of that slot (Beat's second delivery, the next API tick) act now.
            time.sleep(4)
        finally:
            ticker.stop()
            for process in reversed(processes):
                process.stop()

        kept_runs = runs(container, kept)
        assert [j.slot.at for j in kept_runs if j.slot] == [first_slot, second_slot]
        assert [j.slot.at for j in runs(container, paused) if j.slot] == [first_slot]
        assert [j.slot.at for j in runs(container, deleted) if j.slot] == [first_slot]
        edited_runs = runs(container, edited)
        assert [j.slot.at for j in edited_runs if j.slot] == [second_slot]
        assert edited_runs[0].created_at > edited_at
        for job in (*kept_runs, *edited_runs):
            done = container.deps.repo.get(job.id)
            assert done is not None
            assert done.status is JobStatus.COMPLETED, done
        # Several tickers acted on each slot: Beat sent the tick from both processes...
        beat_logs = [p.logs() for p in processes if p.name.startswith("beat-")]
        assert all(log.count("(system.run_schedules)") >= 2 for log in beat_logs)
        # ...RQ's cron scheduler sent its own, which the RQ worker ran.
        assert processes[-1].logs().count("rq_cron.tick.sent") >= 2
        rq_logs = next(p.logs() for p in processes if p.name.startswith("rq-"))
        assert rq_logs.count("app.workers.rq_cron.tick_job()") >= 2
        # The same ticks ran the housekeeping, once per slot (recovery: every minute).
        recoveries = container.housekeeping.ops.runs("system.recover_jobs")
        assert len({slot for slot, _, _ in recoveries}) == len(recoveries) >= 2
        after = container.scheduling.repo.get(kept.id)
        assert after is not None
        assert after.last_slot == second_slot
        container.close()


@pytest.mark.postgres
def test_tickers_racing_on_one_due_slot_make_one_job(work_dir: Path) -> None:
    """Both tickers read the schedule as due before either moves it on: the ledger's unique
    (schedule, slot) leaves one job, and the loser says the slot was taken."""
    with own_ledger(work_dir, "race", SCHEDULE_MIN_INTERVAL_SECONDS="60") as env:
        container = bootstrap.build(settings_from(env, dispatch_backend="inline"))
        try:
            schedule = new(container, "raced", EVERY_MINUTE)
            assert schedule.next_run_at is not None
            later = schedule.next_run_at + timedelta(seconds=5)
            deps = container.deps
            clocked = replace(deps, clock=lambda: later)
            both_read = threading.Barrier(2, timeout=10)

            class Racing:
                """The real repository; ``due`` waits until both tickers have read it."""

                def __init__(self, kit: Scheduling) -> None:
                    self._repo = kit.repo

                def __getattr__(self, name: str) -> object:
                    return getattr(self._repo, name)

                def due(self, now: datetime, *, limit: int) -> list[Schedule]:
                    found = list(self._repo.due(now, limit=limit))
                    both_read.wait()
                    return found

            kit = Scheduling(repo=Racing(container.scheduling), policy=container.scheduling.policy)  # type: ignore[arg-type]
            results: list[dict[str, int]] = []
            tickers = [
                threading.Thread(target=lambda: results.append(fire_due(deps=clocked, kit=kit)))
                for _ in range(2)
            ]
            for t in tickers:
                t.start()
            for t in tickers:
                t.join(30)
            assert sorted(r["fired"] for r in results) == [0, 1]
            assert sorted(r["taken"] for r in results) == [0, 1]
            jobs = runs(container, schedule)
            assert [j.slot.at for j in jobs if j.slot] == [schedule.next_run_at]
            moved = container.scheduling.repo.get(schedule.id)
            assert moved is not None
            assert moved.next_run_at == schedule.next_run_at + timedelta(minutes=1)
        finally:
            container.close()


@pytest.mark.postgres
def test_after_downtime_a_schedule_runs_once_for_the_latest_missed_slot(work_dir: Path) -> None:
    with own_ledger(work_dir, "down", SCHEDULE_MIN_INTERVAL_SECONDS="3600") as env:
        container = bootstrap.build(settings_from(env, dispatch_backend="inline"))
        try:
            schedule = new(container, "daily", "0 6 * * *")
            assert schedule.next_run_at is not None
            four_days_on = schedule.next_run_at + timedelta(days=3, hours=2)
            deps = replace(container.deps, clock=lambda: four_days_on)
            result = fire_due(deps=deps, kit=container.scheduling)
            assert (result["fired"], result["missed"]) == (1, 3)
            assert fire_due(deps=deps, kit=container.scheduling)["fired"] == 0
            jobs = runs(container, schedule)
            latest = schedule.next_run_at + timedelta(days=3)
            assert [j.slot.at for j in jobs if j.slot] == [latest]
            moved = container.scheduling.repo.get(schedule.id)
            assert moved is not None
            assert (moved.last_slot, moved.next_run_at) == (latest, latest + timedelta(days=1))
            assert jobs[0].recipients == ("daily@example.com",)
        finally:
            container.close()
