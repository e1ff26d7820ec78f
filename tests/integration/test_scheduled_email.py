"""A monthly schedule created over REST, from its slot to each recipient's inbox, in every
deployment phase: development (inline jobs, the API's ticker), the Celery stack (a Celery
worker runs Beat's ``system.run_schedules``) and the RQ era (an RQ worker runs the tick RQ's
cron scheduler sends). Real API, workers, PostgreSQL, Redis and SMTP server (aiosmtpd).

A month is not waited for: the schedule's next slot is moved to a minute ago in the ledger
(the clock has reached it), then the phase's ticker fires, twice (a second ticker doubles
nothing). Beat, ``manage.py rq-cron`` and the API's ticker on their own cadence are
``test_schedule_tickers.py``'s.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from app.db.migrations import upgrade
from app.db.models import ScheduleRow
from app.db.session import make_engine
from app.workers.beat_schedule import SCHEDULES
from app.workers.rq_cron import cron_scheduler
from redis import Redis
from sqlalchemy import update

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, create_key, running, wait_for
from tests.integration.ops import clean_env, start_api, stop_api, wait_until
from tests.integration.workers import (
    DEAD_URL,
    REDIS_URL,
    WorkerProcess,
    delete_redis_keys,
    send_task,
    settings_from,
    start_celery_worker,
    start_rq_worker,
)
from tests.smtp import SmtpServer

RECIPIENTS = ["claims@example.com", "audit@example.com"]
PHASES: dict[str, dict[str, str]] = {
    "development": {
        "DISPATCH_BACKEND": "inline",
        "API_TICKER": "true",
        "API_TICKER_SECONDS": "1",
    },
    "celery": {"RQ_ENABLED": "false", "INLINE_FALLBACK": "false"},
    "rq": {"CELERY_ENABLED": "false", "CELERY_BROKER_URL": DEAD_URL, "INLINE_FALLBACK": "false"},
}
BACKEND = {"development": "inline", "celery": "celery", "rq": "rq"}


@pytest.fixture
def env(work_dir: Path, smtp_server: SmtpServer) -> Iterator[dict[str, str]]:
    prefix = f"se{secrets.token_hex(3)}-"
    with fresh_pg_database("sched_email") as url:
        upgrade(url)
        yield clean_env(
            DATABASE_URL=url,
            DATA_DIR=str(work_dir / "data"),
            ENVIRONMENT="test",
            REDIS_URL=REDIS_URL,
            CELERY_BROKER_URL=REDIS_URL,
            QUEUE_PREFIX=prefix,
            PROGRESS_INTERVAL="0.25",
            RETRY_BACKOFF_BASE="0.2",
            RETRY_BACKOFF_MAX="2",
            METRICS_PORT="0",
            LOG_FORMAT="text",
            MAIL_BACKEND="smtp",
            SMTP_HOST=smtp_server.host,
            SMTP_PORT=str(smtp_server.port),
            SMTP_TIMEOUT="5",
        )
    delete_redis_keys(prefix)


def tick(phase: str, env: dict[str, str]) -> None:
    """What the phase's ticker sends (the API's ticks by itself every second)."""
    if phase == "celery":
        send_task(settings_from(env), SCHEDULES)
    elif phase == "rq":
        settings = settings_from(env)
        connection = Redis.from_url(settings.brokers.redis_url)
        try:
            [job] = cron_scheduler(connection, settings.brokers).get_jobs()
            job.enqueue(connection)
        finally:
            connection.close()


def reach_the_slot(database_url: str, schedule_id: str) -> datetime:
    """The clock reaches the schedule's next slot: it is now a minute ago."""
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            update(ScheduleRow).where(ScheduleRow.id == schedule_id).values(next_run_at=slot)
        )
    engine.dispose()
    return slot


def runs(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/reports/schedules/{schedule_id}/runs")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_monthly_schedule_reaches_each_inbox_once_in_every_phase(
    phase: str, env: dict[str, str], work_dir: Path, smtp_server: SmtpServer
) -> None:
    env = {**env, **PHASES[phase]}
    if not smtp_server.running:
        smtp_server.start()
    smtp_server.refused.clear()
    workers: list[WorkerProcess] = []
    api: LiveServer | None = None
    try:
        if phase == "celery":
            workers.append(start_celery_worker(env, work_dir, concurrency=2))
        elif phase == "rq":
            workers.append(start_rq_worker(env, work_dir))
        api = start_api(env, work_dir / "api.log")
        key = create_key(env, "claims-team", "submitter")
        with api.client(api_key=key) as client:
            created = client.post(
                "/api/v1/reports/schedules",
                json={
                    "name": "Monthly claims",
                    "report_type": "pdf",
                    "params": {"pages": 3, "seed": 4},
                    "preset": "monthly",
                    "at": "06:00",
                    "recipients": RECIPIENTS,
                },
            )
            assert created.status_code == 201, created.text
            schedule_id = created.json()["id"]
            slot = reach_the_slot(env["DATABASE_URL"], schedule_id)

            tick(phase, env)
            wait_until(lambda: runs(client, schedule_id), timeout=30)
            tick(phase, env)  # a second ticker on the same slot
            [run] = runs(client, schedule_id)
            done = wait_for(client, run["id"], timeout=40)
            assert (done["status"], done["backend"]) == ("completed", BACKEND[phase]), done
            download = client.get(f"/api/v1/reports/jobs/{run['id']}/download")
            sha256 = hashlib.sha256(download.content).hexdigest()
            assert sha256 == done["artifact"]["sha256"]

            received = smtp_server.wait_for_job(run["id"], len(RECIPIENTS))
            assert sorted(r for m in received for r in m.recipients) == sorted(RECIPIENTS)
            for mail in received:
                assert (
                    mail.message["Subject"] == f"Scheduled pdf report of {slot:%Y-%m-%d}: completed"
                )
                [attachment] = list(mail.message.iter_attachments())
                payload = attachment.get_payload(decode=True)
                assert isinstance(payload, bytes)
                assert hashlib.sha256(payload).hexdigest() == sha256
                assert attachment.get_filename() == done["artifact"]["filename"]

            def emailed() -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = client.get(f"/api/v1/reports/jobs/{run['id']}").json()[
                    "emails"
                ]
                return got

            wait_until(lambda: all(e["status"] == "sent" for e in emailed()), timeout=20)
            assert sorted((e["recipient"], e["attempts"]) for e in emailed()) == sorted(
                (r, 1) for r in RECIPIENTS
            )
            schedule = client.get(f"/api/v1/reports/schedules/{schedule_id}").json()
            assert schedule["last_slot"] == slot.isoformat().replace("+00:00", "Z")
            assert schedule["last_job_id"] == run["id"]
            assert schedule["next_run_at"] > datetime.now(UTC).isoformat()
        assert len(runs(api.client(api_key=key), schedule_id)) == 1
        assert len(smtp_server.for_job(run["id"])) == len(RECIPIENTS)
    finally:
        if api is not None:
            stop_api(api)
        for worker in workers:
            worker.stop()


@pytest.mark.timeout(90)
def test_make_run_defaults_write_each_email_as_an_eml_file(work_dir: Path) -> None:
    """`make run`: development, a SQLite ledger, no SMTP server: the messages land in
    DATA_DIR/outbox, one readable .eml per recipient, the report attached."""
    data = work_dir / "dev"
    ledger = f"sqlite:///{data / 'reports.db'}"
    with running(data, ledger, ENVIRONMENT="development") as api, api.client() as client:
        job = client.post(
            "/api/v1/reports/heavy",
            json={"report_type": "pdf", "pages": 2, "recipients": RECIPIENTS},
        ).json()
        done = wait_for(client, job["id"], timeout=40)
        outbox = data / "outbox"
        wait_until(lambda: len(list(outbox.glob("*.eml"))) == len(RECIPIENTS), timeout=20)
    for path in outbox.glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert message["To"] in RECIPIENTS
        assert message["X-Report-Job"] == job["id"]
        [attachment] = list(message.iter_attachments())
        payload = attachment.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert hashlib.sha256(payload).hexdigest() == done["artifact"]["sha256"]
