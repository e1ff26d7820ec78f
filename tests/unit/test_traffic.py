"""The traffic dial and its guard, on the in-memory ledger: moves, audit, rollback, pin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.domain.traffic import (
    ChangeKind,
    GuardPolicy,
    InvalidTrafficSplit,
    SideFigures,
    TrafficReasonRequired,
    TrafficSplit,
    WindowJob,
    figures,
    judge,
)
from app.services.traffic import TrafficDial

from tests.unit.fakes import MemoryTrafficRepository, RecordingTrafficRecorder

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
POLICY = GuardPolicy(window=timedelta(minutes=10), min_jobs=4, max_failure_delta=0.1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_dial(
    percent: int = 0, policy: GuardPolicy = POLICY
) -> tuple[TrafficDial, MemoryTrafficRepository, RecordingTrafficRecorder, Clock, list[int]]:
    repo, recorder, clock = MemoryTrafficRepository(), RecordingTrafficRecorder(), Clock()
    routed: list[int] = []
    dial = TrafficDial(
        repo=repo,
        initial=TrafficSplit(percent),
        guard=policy,
        apply=lambda split: routed.append(split.celery_percent),
        recorder=recorder,
        clock=clock,
    )
    dial.start()
    return dial, repo, recorder, clock, routed


def jobs(
    backend: Backend, status: JobStatus, n: int, at: datetime, wait: float = 0.1
) -> list[WindowJob]:
    started = at + timedelta(seconds=wait) if status is not JobStatus.QUEUED else None
    return [WindowJob(backend, status, at, at, started) for _ in range(n)]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("percent", "overrides"),
    [(101, {}), (-1, {}), ("50", {}), (True, {}), (50, {"nope": 10}), (50, {"pdf": 200})],
)
def test_bad_values_are_refused_with_a_stable_code(percent: object, overrides: dict) -> None:
    with pytest.raises(InvalidTrafficSplit) as caught:
        TrafficSplit.parse(percent, overrides)
    assert caught.value.code == "INVALID_TRAFFIC_SPLIT"


def test_a_move_needs_a_reason_and_leaves_the_dial_alone_otherwise() -> None:
    dial, repo, *_ = make_dial()
    for reason in (None, "", "   ", "x" * 501):
        with pytest.raises(TrafficReasonRequired):
            dial.move(actor="ops", reason=reason, celery_percent=50)
    with pytest.raises(InvalidTrafficSplit):
        dial.move(actor="ops", reason="step", celery_percent=150)
    assert repo.dial is not None
    assert repo.dial.version == 1
    assert [c.kind for c in repo.changes] == [ChangeKind.SEED]


def test_seed_once_then_each_move_is_audited_applied_and_counted() -> None:
    dial, repo, recorder, clock, routed = make_dial(10)
    clock.now += timedelta(minutes=1)
    state = dial.move(actor="alice", reason="phase 2, step 1", celery_percent=25)
    state = dial.move(actor="alice", reason="pdf stays on RQ", overrides={"pdf": 0})
    assert state.split == TrafficSplit(25, {ReportType.PDF: 0})
    assert routed == [10, 25, 25]
    last = repo.changes[-1]
    assert (last.actor, last.kind, last.reason, last.at) == (
        "alice",
        ChangeKind.OPERATOR,
        "pdf stays on RQ",
        clock.now,
    )
    assert last.before == TrafficSplit(25)
    assert last.after == state.split
    assert recorder.changes == [(ChangeKind.SEED, None), *[(ChangeKind.OPERATOR, None)] * 2]
    # A second process finds the dial and keeps it: the environment is only the first value.
    other = TrafficDial(
        repo=repo,
        initial=TrafficSplit(100),
        guard=POLICY,
        apply=lambda split: routed.append(split.celery_percent),
        recorder=recorder,
    )
    assert other.start().split == state.split
    assert routed[-1] == 25


def test_another_process_applies_a_move_on_its_next_read() -> None:
    dial, repo, *_ = make_dial(0)
    seen: list[int] = []
    other = TrafficDial(
        repo=repo,
        initial=TrafficSplit(0),
        guard=POLICY,
        apply=lambda split: seen.append(split.celery_percent),
        recorder=RecordingTrafficRecorder(),
    )
    other.start()
    other.sync()
    dial.move(actor="ops", reason="go", celery_percent=100)
    other.sync()
    other.sync()  # unchanged: not applied twice
    assert seen == [0, 100]


# --------------------------------------------------------------------------- judgement


def test_judge_compares_celery_with_rq() -> None:
    good = SideFigures(finished=10, failed=0, waits=[1.0] * 10)
    bad = SideFigures(finished=10, failed=5, waits=[1.0] * 10)
    assert judge(good, good, POLICY).healthy is True
    assert judge(bad, good, POLICY).cause == "failure_rate"
    # RQ failing as much: Celery is not worse.
    assert judge(bad, bad, POLICY).healthy is True
    few = SideFigures(finished=2, failed=2, waits=[1.0, 1.0])
    assert judge(few, good, POLICY).healthy is None
    slow = SideFigures(finished=0, waits=[120.0] * 10)
    assert judge(slow, good, POLICY).cause == "queue_wait"
    assert judge(slow, SideFigures(10, 0, [100.0] * 10), POLICY).healthy is None


def test_a_job_still_waiting_counts_its_wait_so_far() -> None:
    stuck = jobs(Backend.CELERY, JobStatus.QUEUED, 3, T0)
    assert figures(stuck, now=T0 + timedelta(seconds=90)).waits == [90.0] * 3


# --------------------------------------------------------------------------- the guard


def test_a_bad_step_is_rolled_back_to_the_last_healthy_value() -> None:
    dial, repo, recorder, clock, routed = make_dial(0)
    repo.jobs += jobs(Backend.RQ, JobStatus.COMPLETED, 6, T0)
    clock.now += timedelta(minutes=1)
    dial.move(actor="ops", reason="step", celery_percent=50)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 1, T0)  # before the step: not judged
    assert dial.check().action == "watching"
    repo.jobs += jobs(Backend.CELERY, JobStatus.COMPLETED, 2, clock.now)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 2, clock.now)
    outcome = dial.check()
    assert outcome.action == "rolled_back"
    assert outcome.change is not None
    assert repo.dial is not None
    assert repo.dial.split == TrafficSplit(0)
    last = repo.changes[-1]
    assert (last.kind, last.actor, last.before, last.after) == (
        ChangeKind.ROLLBACK,
        "guard",
        TrafficSplit(50),
        TrafficSplit(0),
    )
    assert last.reason.startswith("failure_rate: Celery failed 2/4 jobs (50%)")
    assert recorder.changes[-1] == (ChangeKind.ROLLBACK, "failure_rate")
    assert routed[-1] == 0
    assert dial.check().action == "kept"  # back at the healthy value: nothing more to do


def test_a_pinned_dial_is_never_rolled_back() -> None:
    dial, repo, _recorder, clock, _ = make_dial(0)
    dial.move(actor="ops", reason="I watch it myself", celery_percent=100, pinned=True)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 10, clock.now)
    assert dial.check().action == "skipped"
    assert repo.dial is not None
    assert repo.dial.split == TrafficSplit(100)
    dial.move(actor="ops", reason="guard back on", pinned=False)
    assert dial.check().action == "rolled_back"


def test_a_step_healthy_for_a_whole_window_becomes_the_rollback_target() -> None:
    dial, repo, _, clock, _ = make_dial(0)
    dial.move(actor="ops", reason="step 1", celery_percent=30)
    repo.jobs += jobs(Backend.CELERY, JobStatus.COMPLETED, 5, clock.now)
    assert dial.check().action == "watching"  # healthy so far, on probation
    clock.now += POLICY.window + timedelta(seconds=1)
    repo.jobs += jobs(Backend.CELERY, JobStatus.COMPLETED, 5, clock.now)
    assert dial.check().action == "promoted"
    dial.move(actor="ops", reason="step 2", celery_percent=60)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 5, clock.now)
    assert dial.check().action == "rolled_back"
    assert repo.dial is not None
    assert repo.dial.split == TrafficSplit(30)


def test_a_step_back_towards_rq_is_healthy_at_once() -> None:
    dial, repo, *_ = make_dial(50)
    dial.move(actor="ops", reason="less", celery_percent=20)
    assert repo.dial is not None
    assert repo.dial.healthy == TrafficSplit(20)


def test_a_rollback_racing_an_operator_move_does_nothing() -> None:
    dial, repo, _recorder, clock, _ = make_dial(0)
    dial.move(actor="ops", reason="step", celery_percent=100)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 5, clock.now)
    real_current = repo.current
    stale = real_current()

    def moved_meanwhile() -> object:
        repo.change(
            TrafficSplit(90),
            pinned=False,
            actor="ops",
            kind=ChangeKind.OPERATOR,
            reason="meanwhile",
            now=clock.now,
        )
        return stale

    repo.current = moved_meanwhile  # type: ignore[method-assign]
    assert dial.check().action == "raced"
    repo.current = real_current  # type: ignore[method-assign]
    assert repo.dial is not None
    assert repo.dial.split == TrafficSplit(90)
    assert ChangeKind.ROLLBACK not in [c.kind for c in repo.changes]


def test_slow_celery_queues_roll_back_too() -> None:
    dial, repo, _, clock, _ = make_dial(0)
    dial.move(actor="ops", reason="step", celery_percent=100)
    repo.jobs += jobs(Backend.CELERY, JobStatus.QUEUED, 4, clock.now)
    clock.now += timedelta(seconds=POLICY.min_wait_seconds + 5)
    outcome = dial.check()
    assert outcome.action == "rolled_back"
    assert outcome.verdict is not None
    assert outcome.verdict.cause == "queue_wait"


def test_the_guard_switched_off_does_nothing() -> None:
    dial, repo, _, clock, _ = make_dial(0, GuardPolicy(enabled=False, min_jobs=1))
    dial.move(actor="ops", reason="step", celery_percent=100)
    repo.jobs += jobs(Backend.CELERY, JobStatus.FAILED, 5, clock.now)
    assert dial.check().action == "skipped"
