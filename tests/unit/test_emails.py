"""Emails of finished jobs on fakes: one message per recipient, each sent once; temporary
failures retried with the job's backoff, permanent ones recorded; the files mailer."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from app.core.metrics import EMAILS, MetricsObserver
from app.domain.errors import CallbackFailed, StorageUnavailable
from app.domain.jobs import Artifact, JobError, ReportJob, Slot
from app.domain.mail import DeliveryStatus, MailFailed
from app.domain.params import DummyParams
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.mail.files import FileMailer
from app.services.deps import Deps, Mailing, MailPolicy
from app.services.emails import message_id, send_emails
from app.services.notify import notify
from app.storage.local import LocalArtifactStore

from tests.unit.fakes import MemoryEmailDeliveries, ScriptedMailer, memory_deps

ALICE, BOB, CAROL = "alice@example.com", "bob@example.org", "carol@example.net"
REPORT = b"%PDF-1.7 a small report\n" * 40
NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


class SigningStore(LocalArtifactStore):
    """A store that signs links (as S3 does)."""

    def url_for(self, artifact: Artifact, *, expires: int) -> str | None:
        return f"https://bucket.example.com/{artifact.key}?X-Amz-Expires={expires}"


def setup(
    tmp_path: Path,
    *recipients: str,
    status: JobStatus = JobStatus.COMPLETED,
    store: type[LocalArtifactStore] = LocalArtifactStore,
    **policy: object,
) -> tuple[Deps, ScriptedMailer, MemoryEmailDeliveries, ReportJob]:
    """Deps on fakes with a mailer and a finished job emailed to ``recipients``."""
    deps = memory_deps(tmp_path / "artifacts", callback_attempts=3)
    deps = replace(deps, store=store(tmp_path / "artifacts"), clock=lambda: NOW)
    mailer, deliveries = ScriptedMailer(), MemoryEmailDeliveries()
    mail_policy = MailPolicy(sender="Reports <reports@monassurance.example>", **policy)  # type: ignore[arg-type]
    deps = replace(deps, mail=Mailing(mailer, deliveries, mail_policy))
    job = ReportJob.new(
        report_type=ReportType.PDF if status is JobStatus.COMPLETED else ReportType.DUMMY,
        params=DummyParams(),
        max_attempts=3,
        now=NOW - timedelta(minutes=1),
        recipients=recipients or (ALICE, BOB, CAROL),
    )
    artifact, error = None, None
    if status is JobStatus.COMPLETED:
        temp = deps.store.temp_path(job.id, "pdf")
        temp.write_bytes(REPORT)
        artifact = deps.store.save(
            temp, job_id=job.id, filename=f"pdf-{job.id}.pdf", content_type="application/pdf"
        )
    elif status is JobStatus.FAILED:
        error = JobError("SIMULATED_FAILURE", "the renderer gave up")
    job = replace(job, status=status, artifact=artifact, error=error, finished_at=NOW)
    deps.repo.add(job)
    return deps, mailer, deliveries, job


def statuses(deliveries: MemoryEmailDeliveries, job: ReportJob) -> dict[str, tuple[str, int]]:
    return {r.recipient: (r.status.value, r.attempts) for r in deliveries.for_job(job.id)}


def test_each_recipient_gets_one_message_with_the_report_attached_and_never_a_second(
    tmp_path: Path,
) -> None:
    deps, mailer, deliveries, job = setup(tmp_path)
    outcome = send_emails(deps=deps, job_id=job.id)
    assert outcome.kind == "sent"
    assert sorted(r for r, _ in mailer.sent) == sorted([ALICE, BOB, CAROL])
    for recipient in (ALICE, BOB, CAROL):
        [message] = mailer.to(recipient)
        assert message["To"] == recipient
        assert message["From"] == "Reports <reports@monassurance.example>"
        assert message["Subject"] == "Pdf report: completed"
        assert message["Message-ID"] == message_id(job, recipient, "reports@monassurance.example")
        assert message["Message-ID"].endswith("@monassurance.example>")
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert str(job.id) in text
        assert "completed" in text
        assert "attached" in text
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == f"pdf-{job.id}.pdf"
        assert attachment.get_content_type() == "application/pdf"
        assert (
            hashlib.sha256(attachment.get_content()).hexdigest()
            == hashlib.sha256(REPORT).hexdigest()
        )
    assert statuses(deliveries, job) == dict.fromkeys((ALICE, BOB, CAROL), ("sent", 1))
    assert all(r.sent_at == NOW and r.last_reply for r in deliveries.for_job(job.id))
    assert deps.observer.names().count("email_sent") == 3  # type: ignore[attr-defined]
    # A duplicate (or retried) notify step: nothing is sent again.
    assert send_emails(deps=deps, job_id=job.id).kind == "skipped"
    assert notify(deps=deps, job_id=job.id).kind == "skipped"
    assert len(mailer.sent) == 3


def test_message_ids_differ_per_recipient_and_repeat_per_recipient(tmp_path: Path) -> None:
    _, _, _, job = setup(tmp_path)
    ids = {message_id(job, r, "x@y.example") for r in (ALICE, BOB)}
    assert len(ids) == 2
    assert message_id(job, ALICE, "x@y.example") == message_id(job, ALICE, "x@y.example")


def test_a_temporary_failure_is_retried_with_the_jobs_backoff_and_sent_once(
    tmp_path: Path,
) -> None:
    deps, mailer, deliveries, job = setup(tmp_path)
    mailer.fail(BOB, MailFailed("451 4.3.0 try again later", permanent=False))
    first = send_emails(deps=deps, job_id=job.id)
    assert first.kind == "retry"
    assert first.retry_in is not None
    assert 1 <= first.retry_in <= 1.1  # the backoff (base 1 s) plus up to 10 % jitter
    assert statuses(deliveries, job) == {
        ALICE: ("sent", 1),
        BOB: ("retrying", 1),
        CAROL: ("sent", 1),
    }
    assert deliveries.rows[(job.id, BOB)].last_reply == "451 4.3.0 try again later"
    assert send_emails(deps=deps, job_id=job.id).kind == "sent"
    assert statuses(deliveries, job)[BOB] == ("sent", 2)
    assert [r for r, _ in mailer.sent].count(BOB) == 1
    assert len(mailer.sent) == 3
    assert send_emails(deps=deps, job_id=job.id).kind == "skipped"


def test_temporary_failures_give_up_after_the_attempts(tmp_path: Path) -> None:
    deps, mailer, deliveries, job = setup(tmp_path, ALICE, max_attempts=3)
    mailer.fail(ALICE, *[MailFailed("421 busy", permanent=False)] * 5)
    kinds = [send_emails(deps=deps, job_id=job.id).kind for _ in range(4)]
    assert kinds == ["retry", "retry", "failed", "skipped"]
    assert statuses(deliveries, job) == {ALICE: ("failed", 3)}
    assert deps.observer.names().count("email_retrying") == 2  # type: ignore[attr-defined]


def test_a_refused_recipient_is_failed_and_the_others_are_served(tmp_path: Path) -> None:
    deps, mailer, deliveries, job = setup(tmp_path)
    refusal = "550 5.1.1 <bob@example.org>: Recipient address rejected"
    mailer.fail(BOB, MailFailed(refusal, permanent=True))
    assert send_emails(deps=deps, job_id=job.id).kind == "failed"
    assert statuses(deliveries, job) == {
        ALICE: ("sent", 1),
        BOB: ("failed", 1),
        CAROL: ("sent", 1),
    }
    assert deliveries.rows[(job.id, BOB)].last_reply == refusal
    assert send_emails(deps=deps, job_id=job.id).kind == "skipped"
    assert len(mailer.sent) == 2


def test_a_storage_outage_is_temporary(tmp_path: Path) -> None:
    class Down(LocalArtifactStore):
        def read(self, artifact: Artifact, start: int = 0, end: int | None = None):  # type: ignore[no-untyped-def]
            raise StorageUnavailable("the bucket does not answer")

    deps, _mailer, deliveries, job = setup(tmp_path, ALICE)
    deps = replace(deps, store=Down(tmp_path / "artifacts"))
    assert send_emails(deps=deps, job_id=job.id).kind == "retry"
    assert statuses(deliveries, job) == {ALICE: ("retrying", 1)}


def test_a_report_over_the_limit_is_linked_on_the_api_with_a_key(tmp_path: Path) -> None:
    deps, mailer, _, job = setup(
        tmp_path, ALICE, attach_max_bytes=100, base_url="https://reports.example.com"
    )
    send_emails(deps=deps, job_id=job.id)
    [message] = mailer.to(ALICE)
    assert list(message.iter_attachments()) == []
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"https://reports.example.com/api/v1/reports/jobs/{job.id}/download" in text
    assert "API key" in text


def test_a_store_that_signs_links_gives_the_link_and_its_expiry(tmp_path: Path) -> None:
    deps, mailer, _, job = setup(tmp_path, ALICE, store=SigningStore, link_seconds=2 * 86_400)
    job = replace(job, attach_file=False)
    deps.repo.jobs[job.id] = job  # type: ignore[attr-defined]
    send_emails(deps=deps, job_id=job.id)
    [message] = mailer.to(ALICE)
    assert list(message.iter_attachments()) == []
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "https://bucket.example.com/" in text
    assert "X-Amz-Expires=172800" in text
    assert "expires 2 day(s)" in text


def test_a_failed_job_names_its_error_and_a_scheduled_one_its_slot(tmp_path: Path) -> None:
    deps, mailer, _, job = setup(tmp_path, ALICE, status=JobStatus.FAILED)
    slot = Slot(uuid4(), datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    deps.repo.jobs[job.id] = replace(job, slot=slot)  # type: ignore[attr-defined]
    send_emails(deps=deps, job_id=job.id)
    [message] = mailer.to(ALICE)
    assert message["Subject"] == (
        "Scheduled dummy report of 2026-12-01: failed (SIMULATED_FAILURE)"
    )
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "SIMULATED_FAILURE" in text
    assert "2026-12-01 06:00 UTC" in text
    assert list(message.iter_attachments()) == []


@pytest.mark.parametrize("status", [JobStatus.CANCELLED, JobStatus.RUNNING])
def test_cancelled_and_unfinished_jobs_are_not_emailed(tmp_path: Path, status: JobStatus) -> None:
    deps, mailer, deliveries, job = setup(tmp_path, ALICE, status=status)
    assert send_emails(deps=deps, job_id=job.id).kind == "skipped"
    assert mailer.sent == []
    assert deliveries.rows == {}


def test_a_recipient_being_sent_is_left_alone_until_its_lease_is_over(tmp_path: Path) -> None:
    deps, mailer, deliveries, job = setup(tmp_path, ALICE, lease=timedelta(seconds=60))
    deliveries.create(job.id, [ALICE], now=NOW)
    deliveries.claim(job.id, ALICE, now=NOW - timedelta(seconds=20), stale_before=NOW)
    waiting = send_emails(deps=deps, job_id=job.id)
    assert (waiting.kind, waiting.retry_in) == ("retry", 40.0)
    assert mailer.sent == []
    later = replace(deps, clock=lambda: NOW + timedelta(seconds=41))
    assert send_emails(deps=later, job_id=job.id).kind == "sent"  # its sender died
    assert statuses(deliveries, job) == {ALICE: ("sent", 2)}


def test_a_late_sender_cannot_overwrite_a_reclaimed_recipient(tmp_path: Path) -> None:
    _, _, deliveries, job = setup(tmp_path, ALICE)
    deliveries.create(job.id, [ALICE], now=NOW)
    first = deliveries.claim(job.id, ALICE, now=NOW, stale_before=NOW)
    again = deliveries.claim(job.id, ALICE, now=NOW, stale_before=NOW + timedelta(seconds=1))
    assert first is not None
    assert again is not None
    assert again.attempts == 2
    done = {"status": DeliveryStatus.SENT, "reply": "250", "now": NOW}
    assert deliveries.finish(job.id, ALICE, attempt=1, **done) is None  # type: ignore[arg-type]
    assert deliveries.finish(job.id, ALICE, attempt=2, **done) is not None  # type: ignore[arg-type]


def test_the_notify_step_retries_when_either_part_asks_at_the_sooner(tmp_path: Path) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def validate(self, url: str) -> None:
            return None

        def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise CallbackFailed("HTTP 503")

    deps, mailer, deliveries, job = setup(tmp_path, ALICE)
    deps = replace(deps, callbacks=Flaky(), repo=_with_notifications(deps))
    deps.repo.jobs[job.id] = replace(job, callback_url="https://hooks.example.com/r")  # type: ignore[attr-defined]
    mailer.fail(ALICE, MailFailed("451 later", permanent=False))
    first = notify(deps=deps, job_id=job.id)
    assert first.kind == "retry"
    assert first.retry_in is not None
    assert notify(deps=deps, job_id=job.id).kind == "sent"  # both parts, second time
    assert notify(deps=deps, job_id=job.id).kind == "skipped"
    assert statuses(deliveries, job) == {ALICE: ("sent", 2)}


def _with_notifications(deps: Deps) -> object:
    from tests.unit.test_followups import CallbackRepository

    repo = CallbackRepository()
    repo.jobs = deps.repo.jobs  # type: ignore[attr-defined]
    return repo


def test_each_email_outcome_is_counted_by_status() -> None:
    job = ReportJob.new(report_type=ReportType.DUMMY, params=DummyParams(), max_attempts=1, now=NOW)
    before = {s: EMAILS.labels(s)._value.get() for s in ("sent", "retrying", "failed")}
    observer = MetricsObserver()
    for event in ("email_sent", "email_sent", "email_retrying", "email_failed"):
        observer.job_event(event, job, recipient=ALICE)
    after = {s: EMAILS.labels(s)._value.get() for s in ("sent", "retrying", "failed")}
    assert {s: after[s] - before[s] for s in after} == {"sent": 2, "retrying": 1, "failed": 1}


def test_the_files_mailer_writes_a_readable_eml_atomically(tmp_path: Path) -> None:
    deps, _, deliveries, job = setup(tmp_path, ALICE)
    outbox = tmp_path / "outbox"
    files = FileMailer(outbox, clock=lambda: NOW)
    deps = replace(deps, mail=Mailing(files, deliveries, deps.mail.policy))  # type: ignore[union-attr]
    assert send_emails(deps=deps, job_id=job.id).kind == "sent"
    [written] = list(outbox.iterdir())  # no temporary file left beside it
    assert written.name.startswith("20261204T093000Z_alice@example.com_report-")
    assert written.suffix == ".eml"
    parsed = message_from_bytes(written.read_bytes(), policy=policy.default)
    assert parsed["To"] == ALICE
    assert parsed["X-Report-Job"] == str(job.id)
    [attachment] = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_content() == REPORT
    assert deliveries.rows[(job.id, ALICE)].last_reply == f"written to {written}"


def test_the_files_mailer_fails_temporarily_when_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    message = EmailMessage()
    message["Message-ID"] = "<x@y>"
    message.set_content("hi")
    with pytest.raises(MailFailed) as failed:
        FileMailer(blocker / "outbox").send(message, recipient=ALICE)
    assert not failed.value.permanent


def test_unknown_job_is_skipped(tmp_path: Path) -> None:
    deps, _, _, _ = setup(tmp_path, ALICE)
    assert send_emails(deps=deps, job_id=UUID(int=7)).kind == "skipped"


def test_the_console_job_page_shows_each_delivery(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from app.api.console_web import templates

    deps, mailer, deliveries, job = setup(tmp_path, ALICE, BOB)
    mailer.fail(BOB, MailFailed("550 5.1.1 <bob@example.org> rejected", permanent=True))
    send_emails(deps=deps, job_id=job.id)
    page = templates.env.get_template("job.html")
    context = {"job": job, "done": True, "reruns": [], "session": SimpleNamespace(csrf="t")}
    html = "".join(
        page.blocks["main"](page.new_context({**context, "emails": deliveries.for_job(job.id)}))
    )
    assert '<tr class="email" data-status="sent"><td>alice@example.com</td>' in html
    assert '<tr class="email" data-status="failed"><td>bob@example.org</td>' in html
    assert "550 5.1.1 &lt;bob@example.org&gt; rejected" in html
