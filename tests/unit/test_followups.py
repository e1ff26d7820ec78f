"""Follow-up steps without brokers: callback allow-list and signature, the notify service's
retries and idempotence, the deterministic document package."""

from __future__ import annotations

import io
import random
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from app.domain.errors import CallbackFailed, CallbackNotAllowed
from app.domain.jobs import Artifact, Notification, NotifyStatus, ReportJob
from app.domain.params import DummyParams
from app.domain.queues import ReportType
from app.domain.retry import RetryPolicy
from app.domain.states import JobStatus
from app.services.deps import Deps, JobPolicy
from app.services.notify import notify_callback
from app.services.postprocess import metadata, write_package
from app.webhooks import HttpCallbackSender, signature

from tests.unit.fakes import MemoryRepository, RecordingDispatcher, RecordingObserver


def test_callback_urls_must_target_an_allowed_host() -> None:
    sender = HttpCallbackSender(allowed_hosts=["hooks.example.com"], secret="k", timeout=1)
    sender.validate("https://hooks.example.com/report?x=1")
    for url in ("https://evil.example.com/", "ftp://hooks.example.com/", "hooks.example.com"):
        with pytest.raises(CallbackNotAllowed):
            sender.validate(url)
    HttpCallbackSender(allowed_hosts=["*"], secret="", timeout=1).validate("http://93.184.216.34/x")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://localhost./hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://no-such-host.invalid/hook",
    ],
)
def test_a_wildcard_never_reaches_internal_addresses(url: str) -> None:
    sender = HttpCallbackSender(allowed_hosts=["*"], secret="", timeout=1)
    with pytest.raises(CallbackNotAllowed, match="internal addresses"):
        sender.validate(url)


def test_a_host_named_in_the_allow_list_is_allowed_even_if_internal() -> None:
    sender = HttpCallbackSender(allowed_hosts=["*", "127.0.0.1"], secret="", timeout=1)
    sender.validate("http://127.0.0.1:9000/hook")


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    assert signature("secret", "1700000000", b"{}") == (
        "sha256=" + __import__("hmac").new(b"secret", b"1700000000.{}", "sha256").hexdigest()
    )


class CallbackRepository(MemoryRepository):
    """The in-memory ledger, plus the follow-up records."""

    def record_document(self, job_id: UUID, document: Artifact, *, now: datetime) -> bool:
        self.jobs[job_id] = replace(self.jobs[job_id], document=document)
        return True

    def record_notification(
        self, job_id: UUID, *, status: NotifyStatus, now: datetime, error: str | None = None
    ) -> ReportJob | None:
        job = self.jobs[job_id]
        if job.notification and job.notification.status is not NotifyStatus.RETRYING:
            return None
        attempts = (job.notification.attempts if job.notification else 0) + 1
        self.jobs[job_id] = replace(job, notification=Notification(status, attempts, now, error))
        return self.jobs[job_id]


class ScriptedSender:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.sent: list[bytes] = []

    def validate(self, url: str) -> None:
        return None

    def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        self.sent.append(body)
        if self.errors:
            raise self.errors.pop(0)


def finished_job(repo: MemoryRepository, status: JobStatus = JobStatus.COMPLETED) -> ReportJob:
    job = ReportJob.new(
        report_type=ReportType.DUMMY,
        params=DummyParams(),
        max_attempts=3,
        now=datetime.now(UTC),
        callback_url="https://hooks.example.com/r",
    )
    job = replace(job, status=status, finished_at=datetime.now(UTC))
    repo.add(job)
    return job


def deps_with(sender: ScriptedSender, attempts: int = 3) -> Deps:
    return Deps(
        repo=CallbackRepository(),
        dispatcher=RecordingDispatcher(),
        store=None,  # type: ignore[arg-type]
        renderers={},
        observer=RecordingObserver(),
        policy=JobPolicy(retry=RetryPolicy(1, 10, random.Random(1)), callback_attempts=attempts),
        callbacks=sender,
    )


def test_callback_retried_on_5xx_then_sent_once_and_never_again() -> None:
    sender = ScriptedSender(CallbackFailed("HTTP 503"))
    deps = deps_with(sender)
    job = finished_job(deps.repo)  # type: ignore[arg-type]
    first = notify_callback(deps=deps, job_id=job.id)
    assert first.kind == "retry"
    assert first.retry_in is not None
    assert 1 <= first.retry_in <= 1.1  # the backoff (base 1 s) plus up to 10 % jitter
    assert notify_callback(deps=deps, job_id=job.id).kind == "sent"
    assert notify_callback(deps=deps, job_id=job.id).kind == "skipped"  # duplicate delivery
    assert len(sender.sent) == 2


def test_callback_gives_up_on_4xx_or_after_its_attempts() -> None:
    deps = deps_with(ScriptedSender(CallbackFailed("HTTP 404", retryable=False)))
    job = finished_job(deps.repo)  # type: ignore[arg-type]
    assert notify_callback(deps=deps, job_id=job.id).kind == "failed"
    deps = deps_with(ScriptedSender(*[CallbackFailed("HTTP 500")] * 5), attempts=2)
    job = finished_job(deps.repo)  # type: ignore[arg-type]
    assert [notify_callback(deps=deps, job_id=job.id).kind for _ in range(3)] == [
        "retry",
        "failed",
        "skipped",
    ]


def test_cancelled_jobs_are_not_called_back() -> None:
    deps = deps_with(ScriptedSender())
    job = finished_job(deps.repo, JobStatus.CANCELLED)  # type: ignore[arg-type]
    assert notify_callback(deps=deps, job_id=job.id).kind == "skipped"


def test_package_bytes_are_deterministic(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text("{}\n")
    job = replace(
        finished_job(MemoryRepository()),
        artifact=Artifact("k/r.json", "r.json", "application/json", 3, "ab"),
    )
    write_package(tmp_path / "a.zip", [report.read_bytes()], metadata(job))
    write_package(tmp_path / "b.zip", iter([b"{}", b"\n"]), metadata(job))
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    names = zipfile.ZipFile(io.BytesIO((tmp_path / "a.zip").read_bytes())).namelist()
    assert names == ["r.json", "metadata.json"]
