"""The job state machine, parameter bounds and the retry policy."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from app.core.config import Settings
from app.domain.errors import IllegalTransition, InvalidParams
from app.domain.jobs import JobError, ReportJob, utcnow
from app.domain.params import AnalysisParams, ExcelParams, PdfParams, parse_params
from app.domain.queues import Queue, ReportType
from app.domain.retry import RetryPolicy
from app.domain.states import (
    LOST,
    TERMINAL,
    Attempt,
    JobStatus,
    check_transition,
    enter,
    sources_of,
)

S = JobStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.QUEUED),
        (S.QUEUED, S.RUNNING),
        (S.PENDING, S.RUNNING),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.RETRYING),
        (S.RETRYING, S.RUNNING),
        (S.RUNNING, S.QUEUED),
        (S.PENDING, S.CANCELLED),
        (S.QUEUED, S.CANCELLED),
        (S.RUNNING, S.CANCELLED),
        (S.RETRYING, S.CANCELLED),
    ],
)
def test_legal_transitions(current: JobStatus, target: JobStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.COMPLETED, S.RUNNING),
        (S.CANCELLED, S.QUEUED),
        (S.FAILED, S.RETRYING),
        (S.QUEUED, S.COMPLETED),
        (S.PENDING, S.RETRYING),
        (S.RETRYING, S.COMPLETED),
    ],
)
def test_illegal_transitions_raise(current: JobStatus, target: JobStatus) -> None:
    with pytest.raises(IllegalTransition) as err:
        check_transition(current, target)
    assert err.value.code == "ILLEGAL_TRANSITION"


def test_terminal_statuses_lead_nowhere() -> None:
    for status in TERMINAL:
        assert status.terminal
        for target in JobStatus:
            with pytest.raises(IllegalTransition):
                check_transition(status, target)


def test_cancel_reachable_from_every_unfinished_status() -> None:
    assert sources_of(S.CANCELLED) == frozenset(set(JobStatus) - TERMINAL)
    assert sources_of(S.RUNNING) == {S.PENDING, S.QUEUED, S.RETRYING}


def test_defaults_fill_missing_params() -> None:
    params = parse_params(ReportType.PDF, {})
    assert params == PdfParams(pages=50, processing_time=0.0, seed=0)
    assert parse_params(ReportType.EXCEL, {"rows": "200"}) == ExcelParams(rows=200)


@pytest.mark.parametrize(
    ("report_type", "raw", "needle"),
    [
        (ReportType.PDF, {"pages": 0}, "pages"),
        (ReportType.PDF, {"pages": -1}, "pages"),
        (ReportType.PDF, {"pages": 10**9}, "pages"),
        (ReportType.PDF, {"pages": 1001}, "pages"),
        (ReportType.PDF, {"processing_time": 3600.5}, "processing_time"),
        (ReportType.PDF, {"processing_time": -1}, "processing_time"),
        (ReportType.PDF, {"rows": 10}, "not a parameter of pdf reports"),
        (ReportType.EXCEL, {"rows": 1_000_001}, "rows"),
        (ReportType.EXCEL, {"sheets": 0}, "sheets"),
        (ReportType.ANALYSIS, {"rows": 99}, "rows"),
        (ReportType.DUMMY, {"simulate_failures": 6}, "simulate_failures"),
        (ReportType.PDF, {"pages": "many"}, "pages"),
    ],
)
def test_out_of_bounds_params_are_refused(
    report_type: ReportType, raw: dict[str, object], needle: str
) -> None:
    with pytest.raises(InvalidParams) as err:
        parse_params(report_type, raw)
    assert err.value.code == "INVALID_PARAMS"
    assert needle in err.value.message


def test_bounds_are_inclusive() -> None:
    assert parse_params(ReportType.PDF, {"pages": 1000, "processing_time": 3600}).pages == 1000  # type: ignore[union-attr]
    assert isinstance(parse_params(ReportType.ANALYSIS, {"rows": 100}), AnalysisParams)


def test_new_job_is_pending_on_the_reports_queue_with_its_priority() -> None:
    now = utcnow()
    job = ReportJob.new(
        report_type=ReportType.PDF, params=PdfParams(pages=3), max_attempts=3, now=now
    )
    assert job.status is S.PENDING
    assert job.queue is Queue.REPORTS
    assert job.priority == 5
    assert job.params == {"pages": 3, "processing_time": 0.0, "seed": 0}
    assert job.created_at.tzinfo is not None


def test_queue_priorities_follow_the_seed_table() -> None:
    assert {q.value: q.priority for q in Queue} == {
        "reports": 5,
        "documents": 7,
        "notifications": 3,
        "celery": 6,
    }


def test_retry_delay_grows_exponentially_within_jitter_and_cap() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=20, rng=random.Random(7))
    for attempt, nominal in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (9, 20)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(nominal <= d <= min(20, nominal * 1.1) for d in delays), (attempt, delays)


def test_the_default_retries_are_the_specs_60_120_240_seconds_plus_a_little_jitter() -> None:
    """``max_retries=3`` and ``countdown=60 * 2 ** retries``: attempts 1-3 fail, 4 is last."""
    policy = RetryPolicy(rng=random.Random(11))
    assert [policy.nominal(n) for n in (1, 2, 3)] == [60, 120, 240]
    for attempt, nominal in [(1, 60), (2, 120), (3, 240)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(nominal <= d <= nominal * 1.1 for d in delays)
        assert max(delays) > nominal  # jittered: a burst of failures does not retry at once
    defaults = {name: f.default for name, f in Settings.fields().items()}
    assert (defaults["max_attempts"], defaults["retry_backoff_base"]) == (4, 60.0)
    assert (defaults["callback_max_attempts"], defaults["email_max_attempts"]) == (4, 4)


def test_the_timeline_keeps_each_attempt_with_its_worker_and_outcome() -> None:
    t0 = utcnow()
    at = [t0 + timedelta(seconds=n) for n in range(6)]
    boom = JobError("RENDER_FAILED", "boom")
    job = ReportJob.new(report_type=ReportType.PDF, params=PdfParams(), max_attempts=3, now=t0)
    job = enter(job, S.QUEUED, now=at[0])
    job = enter(job, S.RUNNING, now=at[1], worker="w1")
    job = enter(job, S.RETRYING, now=at[2], error=boom)
    job = enter(job, S.RUNNING, now=at[3], worker="w2")
    job = enter(job, S.RUNNING, now=at[4], worker="w3")  # w2 went stale: w3 reclaims
    assert job.attempt_log[-1] == Attempt(3, "w3", at[4])  # running: no end yet
    job = enter(job, S.COMPLETED, now=at[5])
    assert job.attempt_log == (
        Attempt(1, "w1", at[1], at[2], "retrying", "RENDER_FAILED"),
        Attempt(2, "w2", at[3], at[4], LOST),
        Attempt(3, "w3", at[4], at[5], "completed"),
    )
    assert job.attempts == 3
