"""Log lines (python-json-logger's JSON, the text format), the request and correlation ids,
and the 500 answer of an unexpected exception: body, headers and the logged stack."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from app.api.errors import install_error_handlers
from app.api.middleware import RequestIdMiddleware
from app.core.config import Settings
from app.core.logging import (
    JsonFormatter,
    TextFormatter,
    Trace,
    correlation_id_var,
    job_id_var,
    request_id_var,
)
from app.dispatch.inline_dispatcher import InlineDispatcher
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import PdfParams
from app.domain.queues import Backend, ReportType
from app.main import create_app
from app.services.emails import send_emails
from app.webhooks import HttpCallbackSender
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.unit.fakes import MemoryRepository, RecordingDispatcher
from tests.unit.test_emails import setup as email_setup


def record(message: str, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("app.test").makeRecord(
        "app.test", logging.INFO, __file__, 1, message, (), None, extra=extra
    )


def test_a_json_line_has_the_time_level_logger_event_context_ids_and_extras() -> None:
    with Trace("abc-123", "req-1").bound():
        token = job_id_var.set("job-1")
        try:
            line = JsonFormatter().format(record("report_job.completed", duration_s=1.5))
        finally:
            job_id_var.reset(token)
    entry = json.loads(line)
    assert list(entry)[:4] == ["ts", "level", "logger", "event"]
    assert entry["ts"].endswith("+00:00")
    assert entry == {
        "ts": entry["ts"],
        "level": "info",
        "logger": "app.test",
        "event": "report_job.completed",
        "duration_s": 1.5,
        "correlation_id": "abc-123",
        "request_id": "req-1",
        "job_id": "job-1",
    }


def test_an_extra_field_wins_and_a_traceback_goes_in_exc() -> None:
    token = job_id_var.set("from-context")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("http.unhandled", job_id="from-extra")
        failed.exc_info = sys.exc_info()
    finally:
        job_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["job_id"] == "from-extra"
    assert "correlation_id" not in entry  # nothing bound: no field, no null
    assert list(entry)[-1] == "exc"
    assert entry["exc"].startswith("Traceback")
    assert "RuntimeError: boom" in entry["exc"]


def test_a_text_line_ends_with_the_job_and_correlation_ids() -> None:
    with Trace("abc-123", "req-1").bound():
        token = job_id_var.set("job-1")
        try:
            line = TextFormatter().format(record("report_job.started", attempt=1))
        finally:
            job_id_var.reset(token)
    assert (
        line == "INFO    app.test: report_job.started attempt=1 job_id=job-1 correlation_id=abc-123"
    )


def test_a_trace_outside_a_request_is_the_job_id_and_round_trips_as_message_fields() -> None:
    job_id = uuid4()
    assert Trace.current(job_id) == Trace(str(job_id))
    with Trace("abc-123", "req-1").bound():
        trace = Trace.current(job_id)
    assert trace == Trace("abc-123", "req-1")
    assert Trace.carried(trace.fields()) == trace
    assert Trace.carried({"request_id": "req-1"}) is None
    assert Trace.carried(None) is None
    assert (correlation_id_var.get(), request_id_var.get()) == (None, None)


# --------------------------------------------------------------------------- the middleware


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def logging_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    log = logging.getLogger("app.test.route")

    @app.get("/hello")
    def hello() -> dict[str, str | None]:
        log.warning("test.hello")
        return {"correlation_id": correlation_id_var.get(), "request_id": request_id_var.get()}

    return app


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The root logger's lines, in JSON; its handlers restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield lambda: lines(stream.getvalue())
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_correlation_id_given_comes_back_and_is_in_the_request_s_log_lines(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    with TestClient(logging_app()) as client:
        answer = client.get("/hello", headers={"X-Correlation-ID": "abc-123"})
    assert answer.headers["x-correlation-id"] == "abc-123"
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32  # generated
    assert answer.json() == {"correlation_id": "abc-123", "request_id": request_id}
    [line] = [x for x in json_logs() if x["event"] == "test.hello"]
    assert (line["correlation_id"], line["request_id"]) == ("abc-123", request_id)


@pytest.mark.parametrize(
    ("headers", "same_as_given"),
    [({"X-Request-ID": "req-77"}, True), ({}, False), ({"X-Correlation-ID": "no spaces"}, False)],
)
def test_without_a_valid_correlation_id_the_request_id_is_both(
    headers: dict[str, str], same_as_given: bool, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    with TestClient(logging_app()) as client:
        answer = client.get("/hello", headers=headers)
    correlation = answer.headers["x-correlation-id"]
    assert correlation == answer.headers["x-request-id"]
    assert (correlation == "req-77") is same_as_given
    [line] = [x for x in json_logs() if x["event"] == "test.hello"]
    assert line["correlation_id"] == correlation


def settings(tmp_path: Path) -> Settings:
    with socket.socket() as sock:  # a port nothing listens on: the rate limit stays local
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="development",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'never-created.db'}",
        redis_url=f"redis://127.0.0.1:{port}/0",
        inline_fallback=False,
        log_format="json",
    )


class ExplodingRepository(MemoryRepository):
    """A ledger whose reads fail the way a bug does: a plain RuntimeError."""

    def get(self, job_id: UUID) -> ReportJob | None:
        raise RuntimeError(f"ledger exploded reading {job_id}")


def test_an_unexpected_exception_answers_500_with_the_ids_and_logs_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        settings(tmp_path), repo=ExplodingRepository(), dispatcher=RecordingDispatcher(Backend.RQ)
    )
    job_id = uuid4()
    with TestClient(app, raise_server_exceptions=False) as client:
        capsys.readouterr()
        answer = client.get(
            f"/api/v1/reports/jobs/{job_id}",
            headers={"X-Correlation-ID": "abc-123", "X-Request-ID": "req-500"},
        )
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"] == "INTERNAL_ERROR"
    assert body["message"] == "Internal server error; it has been logged."
    assert body["correlation_id"] == "abc-123"
    assert body["timestamp"]
    assert "Traceback" not in answer.text
    assert "exploded" not in answer.text
    assert answer.headers["x-correlation-id"] == "abc-123"
    assert answer.headers["x-request-id"] == "req-500"
    [line] = [x for x in lines(capsys.readouterr().out) if x["event"] == "http.unhandled"]
    assert (line["level"], line["correlation_id"], line["request_id"]) == (
        "error",
        "abc-123",
        "req-500",
    )
    assert line["exc"].startswith("Traceback (most recent call last)")
    assert f"RuntimeError: ledger exploded reading {job_id}" in line["exc"]


def test_an_expected_error_body_carries_the_correlation_id_too(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), repo=MemoryRepository())
    with TestClient(app) as client:
        answer = client.get(f"/api/v1/reports/jobs/{uuid4()}", headers={"X-Correlation-ID": "c-1"})
    assert answer.status_code == 404
    assert answer.json()["correlation_id"] == "c-1"
    assert answer.headers["x-correlation-id"] == "c-1"


def test_an_enqueue_logs_under_the_request_s_correlation_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatcher = RecordingDispatcher(Backend.CELERY)
    app = create_app(settings(tmp_path), repo=MemoryRepository(), dispatcher=dispatcher)
    with TestClient(app) as client:
        created = client.post(
            "/api/v1/reports/dummy", headers={"X-Correlation-ID": "abc-123"}
        ).json()
    about = [x for x in lines(capsys.readouterr().out) if x.get("job_id") == created["id"]]
    assert about, "no log line about the job"
    assert {x["correlation_id"] for x in about} == {"abc-123"}


# --------------------------------------------------------------------------- inline pool


def test_the_inline_pool_runs_each_delivery_under_the_dispatching_request_s_ids() -> None:
    seen: list[tuple[int, str | None, str | None]] = []
    done = threading.Event()

    def runner(job_id: UUID, deliveries: int) -> float | None:
        seen.append((deliveries, correlation_id_var.get(), request_id_var.get()))
        if deliveries == 0:
            return 0.01  # a retry, delivered later by a timer
        done.set()
        return None

    pool = InlineDispatcher(1)
    pool.bind(runner)
    job = ReportJob.new(
        report_type=ReportType.PDF, params=PdfParams(), max_attempts=1, now=utcnow()
    )
    try:
        with Trace("abc-123", "req-1").bound():
            pool.dispatch(job)
        assert done.wait(5)
    finally:
        pool.shutdown()
    assert seen == [(0, "abc-123", "req-1"), (1, "abc-123", "req-1")]


# --------------------------------------------------------------------------- deliveries


def test_a_callback_carries_the_bound_correlation_id(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, str]] = []

    def post(url: str, **kwargs: Any) -> httpx.Response:
        sent.append(kwargs["headers"])
        return httpx.Response(204)

    monkeypatch.setattr(httpx, "post", post)
    sender = HttpCallbackSender(allowed_hosts=["hooks.example.com"], secret="k", timeout=1)
    with Trace("abc-123", "req-1").bound():
        sender.send("https://hooks.example.com/x", b"{}", delivery_id="d-1")
    sender.send("https://hooks.example.com/x", b"{}", delivery_id="d-2")
    assert sent[0]["X-Correlation-ID"] == "abc-123"
    assert "X-Correlation-ID" not in sent[1]


def test_each_email_carries_the_bound_correlation_id(tmp_path: Path) -> None:
    deps, mailer, _, job = email_setup(tmp_path, "alice@example.com")
    with Trace("abc-123").bound():
        assert send_emails(deps=deps, job_id=job.id).kind == "sent"
    [(_, message)] = mailer.sent
    assert message["X-Correlation-ID"] == "abc-123"
