"""Backend building blocks without brokers: circuit breaker, availability smoothing, the
settings of the migration phases, the Celery app configuration, callbacks, CLI helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from app.bootstrap import celery_app
from app.cli import celery_manager
from app.cli.celery_manager import parse_queues, redact
from app.core.celery_app import check_visibility_timeout
from app.core.circuit import CircuitBreaker, CircuitState
from app.core.config import Settings, soft_limit
from app.dispatch.availability import Availability, steady
from app.dispatch.celery_dispatcher import CeleryDispatcher
from app.domain.errors import InvalidInput, Misconfigured
from app.domain.jobs import ReportJob
from app.domain.params import PdfParams
from app.domain.queues import Queue, ReportType
from celery.canvas import Signature, _chain


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- circuit breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_failures_and_lets_one_trial_through_later() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, reset_after=10, clock=clock)
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert (breaker.state, breaker.allow(), breaker.available()) == (
        CircuitState.OPEN,
        False,
        False,
    )
    clock.now = 10.5
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure()  # the trial failed: open again for a full period
    assert breaker.state is CircuitState.OPEN
    clock.now = 21
    assert breaker.allow()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED


# --------------------------------------------------------------------------- availability


def test_a_worker_missing_from_one_reply_is_still_counted_but_not_from_two() -> None:
    seen = Availability(True, {Queue.REPORTS: 2})
    missed = Availability(True, {})
    assert steady(seen, missed).workers == {Queue.REPORTS: 2}
    assert steady(missed, missed).workers == {}
    assert not steady(seen, Availability(False, {}, "down")).reachable


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("environment", "mode", "fallback", "allowed"),
    [
        ("development", "auto", None, True),
        ("test", "auto", None, False),
        ("production", "auto", None, False),
        ("production", "inline", None, True),
        ("production", "auto", True, True),
        ("development", "auto", False, False),
        ("development", "celery", None, False),
    ],
)
def test_inline_is_allowed_in_development_when_forced_or_when_enabled(
    environment: str, mode: str, fallback: bool | None, allowed: bool
) -> None:
    s = settings(environment=environment, dispatch_backend=mode, inline_fallback=fallback)
    assert s.inline_allowed is allowed


def test_broker_defaults_to_redis_url_and_time_limits_merge_over_defaults() -> None:
    s = settings(redis_url="redis://cache:6379/3", report_time_limits={"pdf": 600})
    assert s.brokers.celery_broker_url == "redis://cache:6379/3"
    assert (s.jobs.hard_time_limit("pdf"), s.jobs.soft_time_limit("pdf")) == (600, 540)
    assert s.jobs.hard_time_limit("dummy") == 3700


@pytest.mark.parametrize(
    ("hard", "soft"),
    [(600, 540), (30, 27), (8, 6), (4, 2), (1, 0.5)],
)
def test_the_soft_limit_leaves_the_render_time_to_record_its_failure(
    hard: float, soft: float
) -> None:
    assert soft_limit(hard) == soft  # 90 %, at least 2 s under the hard limit, at least half


@pytest.mark.parametrize(
    "bad",
    [
        {"celery_traffic_overrides": {"pdf": 101}},
        {"celery_traffic_overrides": {"invoice": 50}},
        {"report_time_limits": {"pdf": 0}},
    ],
)
def test_bad_migration_or_limit_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"CELERY_TRAFFIC_OVERRIDES|REPORT_TIME_LIMITS"):
        settings(**bad)


def test_callback_hosts_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", "Hooks.Example.com, 127.0.0.1")
    assert Settings(_env_file=None).callbacks.callback_allowed_hosts == [  # type: ignore[call-arg]
        "hooks.example.com",
        "127.0.0.1",
    ]


# --------------------------------------------------------------------------- Celery app


def test_celery_app_is_json_only_with_the_seed_queues_and_bounded_publishes() -> None:
    conf = celery_app(settings(queue_prefix="x-")).conf
    assert (conf.task_serializer, conf.result_serializer, conf.accept_content) == (
        "json",
        "json",
        ["json"],
    )
    assert (conf.timezone, conf.enable_utc) == ("Europe/Paris", True)
    assert [q.name for q in conf.task_queues] == [
        "x-reports",
        "x-documents",
        "x-notifications",
        "x-celery",
    ]
    # Redis serves the lowest priority number first: the queue priorities are inverted.
    assert conf.task_routes["reports.*"] == {"queue": "x-reports", "priority": 9 - 5}
    assert conf.task_routes["documents.*"]["priority"] == 9 - 7
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_publish_retry_policy["max_retries"] == 1
    assert conf.broker_transport_options["max_retries"] == 1
    assert conf.broker_transport_options["visibility_timeout"] > 3900


def test_visibility_timeout_must_exceed_the_longest_hard_limit() -> None:
    with pytest.raises(Misconfigured, match="CELERY_VISIBILITY_TIMEOUT"):
        check_visibility_timeout(settings(celery_visibility_timeout=3000).celery_policy())
    check_visibility_timeout(settings(celery_visibility_timeout=4000).celery_policy())
    amqp = settings(
        celery_broker_url="amqp://guest:guest@localhost//", celery_visibility_timeout=60
    )
    check_visibility_timeout(amqp.celery_policy())  # RabbitMQ has no visibility timeout


# --------------------------------------------------------------------------- RQ


# --------------------------------------------------------------------------- CLI helpers


def test_queues_parse_in_priority_order_and_unknown_ones_are_refused() -> None:
    assert parse_queues("all") == [
        Queue.DOCUMENTS,
        Queue.CELERY,
        Queue.REPORTS,
        Queue.NOTIFICATIONS,
    ]
    assert parse_queues(["notifications,reports"]) == [Queue.REPORTS, Queue.NOTIFICATIONS]
    with pytest.raises(InvalidInput, match="invoices"):
        parse_queues("invoices")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["reports"], 2),
        (["documents"], 1),
        (["notifications"], 1),
        (["celery"], 1),
        (["documents,reports"], 2),
        (["reports", "4"], 4),
    ],
)
def test_a_worker_without_a_count_runs_the_seeds_concurrency(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: int
) -> None:
    started: list[int] = []
    monkeypatch.setattr(celery_manager, "run_worker", lambda queues, n, **_: started.append(n) or 0)
    assert celery_manager.main(["worker", *argv]) == 0
    assert started == [expected]


def test_status_never_prints_a_broker_password() -> None:
    assert redact("amqp://guest:s3cret@rabbit:5672//") == "amqp://guest:***@rabbit:5672//"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_celery_messages_carry_only_the_job_id_with_per_type_limits_and_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(Signature, "apply_async", lambda sig, *a, **k: sent.append(sig))
    monkeypatch.setattr(_chain, "apply_async", lambda chain, *a, **k: sent.append(chain))
    s = settings(queue_prefix="x-", report_time_limits={"pdf": 600})
    dispatcher = CeleryDispatcher(
        celery_app(s), s.brokers, jobs=s.jobs, routing=s.routing, breaker=CircuitBreaker()
    )
    job = ReportJob.new(
        report_type=ReportType.PDF, params=PdfParams(), max_attempts=3, now=datetime.now(UTC)
    )
    dispatcher.publish(job)
    dispatcher.publish(replace(job, callback_url="https://hooks.example.com/x"))
    render, chained = sent
    assert (render.task, render.args, render.immutable) == (
        "reports.run_report",
        (str(job.id),),
        True,
    )
    assert {k: render.options[k] for k in ("queue", "priority", "task_id")} == {
        "queue": "x-reports",
        "priority": 9 - 5,  # Redis: inverted (see app.core.celery_app.message_priority)
        "task_id": str(job.id),
    }
    assert (render.options["time_limit"], render.options["soft_time_limit"]) == (600, 540)
    steps = [(t.task, t.options["queue"], t.args) for t in chained.tasks]
    assert steps == [
        ("reports.run_report", "x-reports", (str(job.id),)),
        ("documents.postprocess", "x-documents", (str(job.id),)),
        ("notifications.notify", "x-notifications", (str(job.id),)),
    ]
