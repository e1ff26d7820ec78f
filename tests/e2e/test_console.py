"""The console's security against a live API on PostgreSQL (keys required): sessions,
CSRF, the owner rule, headers; and its pages' content, read as a browser gets them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from app.db.housekeeping import SqlHousekeepingRepository
from app.db.session import make_engine, make_sessions
from app.domain.operations import JobTiming
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.services.daily_stats import daily_figures

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, running, wait_for
from tests.integration.workers import run_cli

DUMMY = "/api/v1/reports/dummy"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("console")
    with fresh_pg_database("reports_console") as url, running(data_dir, url) as live:
        yield live


@contextmanager
def browser(api: LiveServer, key: str | None) -> Iterator[httpx.Client]:
    """A cookie-keeping client, signed in with ``key`` when given."""
    with httpx.Client(base_url=api.url, timeout=10, follow_redirects=False) as client:
        if key is not None:
            answer = client.post("/console/sign-in", data={"api_key": key})
            assert answer.status_code == 303, answer.text
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_no_page_or_action_without_a_session(api: LiveServer) -> None:
    job = api.client().post(DUMMY, json={"processing_time": 0}).json()
    with browser(api, None) as anonymous:
        for path in ("/console/jobs", f"/console/jobs/{job['id']}", "/console/queues"):
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/sign-in")
        for path in (f"/console/jobs/{job['id']}/cancel", "/console/traffic"):
            assert anonymous.post(path, data={"csrf": "x"}).status_code == 303
        assert anonymous.get(f"/console/api/progress?ids={job['id']}").status_code == 401
        assert anonymous.get(f"/console/jobs/{job['id']}/download").status_code == 303
        wrong = anonymous.post("/console/sign-in", data={"api_key": "rk_0_wrong"})
        assert wrong.status_code == 401
        assert "console_session" not in wrong.headers.get("set-cookie", "")
        # Login CSRF: another site's page posting a valid key gets no session.
        forged = anonymous.post(
            "/console/sign-in",
            data={"api_key": api.api_key},
            headers={"Origin": "https://elsewhere.example"},
        )
        assert forged.status_code == 403
        assert "console_session" not in forged.headers.get("set-cookie", "")


def test_session_cookie_and_headers(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        answer = client.post(
            "/console/sign-in", data={"api_key": api.api_key}, follow_redirects=False
        )
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "secure" not in cookie  # plain HTTP here; set behind TLS
        page = client.get("/console/jobs")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text  # no inline script: only the external file
    with httpx.Client(base_url=api.url, timeout=10) as proxied:
        behind_tls = proxied.post(
            "/console/sign-in",
            data={"api_key": api.api_key},
            headers={"X-Forwarded-Proto": "https"},  # a TLS proxy on 127.0.0.1, trusted
            follow_redirects=False,
        )
    assert "secure" in behind_tls.headers["set-cookie"].lower()


def test_a_form_without_its_csrf_token_is_refused(api: LiveServer) -> None:
    job = api.client().post(DUMMY, json={"processing_time": 30}).json()
    with browser(api, api.api_key) as client:
        token = csrf_of(client.get(f"/console/jobs/{job['id']}").text)
        for data in ({}, {"csrf": "forged"}):
            answer = client.post(f"/console/jobs/{job['id']}/cancel", data=data)
            assert answer.status_code == 403
            assert "CSRF_FAILED" in answer.text
        assert api.client().get(f"/api/v1/reports/jobs/{job['id']}").json()["status"] != (
            "cancelled"
        )
        done = client.post(f"/console/jobs/{job['id']}/cancel", data={"csrf": token})
        assert done.status_code == 303
    assert wait_for(api.client(), job["id"])["status"] == "cancelled"


def test_submitters_see_and_act_on_their_own_jobs_only(api: LiveServer) -> None:
    alice, bob = api.create_key("alice"), api.create_key("bob")
    with api.client(api_key=alice) as as_alice:
        job = as_alice.post(DUMMY, json={"processing_time": 30}).json()
    with browser(api, bob) as client:
        listed = client.get("/console/jobs")
        assert job["id"][:8] not in listed.text
        token = csrf_of(listed.text)
        # Even an owner filter does not widen a submitter's view.
        assert job["id"][:8] not in client.get("/console/jobs?owner=alice").text
        for answer in (
            client.get(f"/console/jobs/{job['id']}"),
            client.get(f"/console/jobs/{job['id']}/download"),
            client.post(f"/console/jobs/{job['id']}/cancel", data={"csrf": token}),
            client.post(f"/console/jobs/{job['id']}/run-again", data={"csrf": token}),
        ):
            assert answer.status_code == 404
            assert "JOB_NOT_FOUND" in answer.text
        progress = client.get(f"/console/api/progress?ids={job['id']}").json()
        assert progress == {"jobs": []}
        queues = client.get("/console/queues")
        assert "Move the dial" not in queues.text
        assert client.post("/console/traffic", data={"csrf": token}).status_code == 403
    with browser(api, alice) as client:
        assert job["id"][:8] in client.get("/console/jobs").text
    with api.client() as operator:
        operator.delete(f"/api/v1/reports/jobs/{job['id']}")


def test_a_job_page_shows_each_attempt(api: LiveServer) -> None:
    with api.client() as operator:
        job = operator.post(DUMMY, json={"processing_time": 0, "simulate_failures": 1}).json()
        done = wait_for(operator, job["id"])
    assert (done["status"], done["attempts"]) == ("completed", 2)
    with browser(api, api.api_key) as client:
        page = client.get(f"/console/jobs/{job['id']}").text
    attempts = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", item)).strip()
        for item in re.findall(r'<li class="attempt">(.*?)</li>', page, re.S)
    ]
    assert len(attempts) == 2, page
    first, second = attempts
    assert first.startswith("attempt 1 on ")
    assert first.endswith("retrying SIMULATED_FAILURE")
    assert second.startswith("attempt 2 on ")
    assert second.endswith(" completed")
    started = [datetime.fromisoformat(a.split("started ")[1].split(",")[0]) for a in attempts]
    ended = [datetime.fromisoformat(a.split("ended ")[1].split(" ")[0]) for a in attempts]
    assert started[0] <= ended[0] <= started[1] <= ended[1]


def test_sign_out_ends_the_session_everywhere(api: LiveServer) -> None:
    with browser(api, api.api_key) as client:
        cookie = client.cookies["console_session"]
        token = csrf_of(client.get("/console/jobs").text)
        assert client.post("/console/sign-out", data={"csrf": token}).status_code == 303
    with httpx.Client(base_url=api.url, timeout=10, cookies={"console_session": cookie}) as old:
        assert old.get("/console/jobs", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_console_session(api: LiveServer) -> None:
    key = api.create_key("carol")
    with browser(api, key) as client:
        assert "Signed in as carol" in client.get("/console/jobs").text
        key_id = key.split("_")[1]
        revoked = run_cli(["manage.py", "api-key", "revoke", key_id], api.env)
        assert revoked.returncode == 0, revoked.stderr
        refused = client.get("/console/jobs", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/console/sign-in")


def test_development_needs_no_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, ENVIRONMENT="development") as dev:
        assert dev.api_key is None
        with httpx.Client(base_url=dev.url, timeout=10, follow_redirects=True) as client:
            page = client.get("/console/jobs")
            assert page.status_code == 200
            assert "Signed in as development (operator)" in page.text
            assert "Move the dial" in client.get("/console/queues").text


def test_daily_figures_as_charts(api: LiveServer) -> None:
    day = date(2026, 11, 30)
    start = datetime(2026, 11, 30, 9, tzinfo=UTC)
    timings = [
        JobTiming(
            ReportType.PDF, Backend.CELERY, JobStatus.COMPLETED, start, start + timedelta(seconds=s)
        )
        for s in (2, 4, 6)
    ] + [
        JobTiming(
            ReportType.DUMMY, Backend.RQ, JobStatus.FAILED, start, start + timedelta(seconds=1)
        )
    ]
    engine = make_engine(api.database_url)
    try:
        ops = SqlHousekeepingRepository(make_sessions(engine))
        ops.save_daily_stats(day, daily_figures(timings, day=day, zone="UTC"), now=start)
    finally:
        engine.dispose()
    with browser(api, api.api_key) as client:
        page = client.get("/console/stats")
        assert page.status_code == 200
        assert "Daily figures of 2026-11-30" in page.text
        assert "4 jobs" in page.text
        # Bars scaled to the largest: 3 completed on Celery is the full width.
        assert re.search(r'<rect [^>]*width="100.0"[^>]*><title>completed · celery: 3', page.text)
        assert re.search(r'width="33.3"[^>]*><title>failed · rq: 1', page.text)
        assert "pdf · celery: 4.0 s" in page.text  # its p50
        assert client.get("/console/stats?day=2026-01-01").status_code == 404
        assert client.get("/console/stats?day=nonsense").status_code == 422
    with browser(api, api.create_key("dora")) as client:
        assert client.get("/console/stats").status_code == 403


# --------------------------------------------------------------------------- schedules

SCHEDULES = "/api/v1/reports/schedules"


def new_schedule(api: LiveServer, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """A daily schedule made over REST (``key``: whose; default the operator's)."""
    body = {
        "name": "Daily claims",
        "report_type": "pdf",
        "params": {"pages": 2},
        "preset": "daily",
        "at": "06:00",
        "timezone": "UTC",
        "recipients": ["claims@example.com"],
        **fields,
    }
    with api.client(api_key=key) as http:
        answer = http.post(SCHEDULES, json=body)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def schedule_row(html: str, schedule_id: str) -> str:
    """The text of the list's row of ``schedule_id``, tags stripped."""
    found = re.search(rf'<tr data-schedule="{schedule_id}">(.*?)</tr>', html, re.S)
    assert found, html[:2000]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def test_schedules_are_listed_and_shown(api: LiveServer) -> None:
    daily = new_schedule(api, name="Daily claims PDF", recipients=["a@example.com", "b@x.org"])
    cron = new_schedule(api, name="Weekday mornings", preset=None, at=None, cron="30 7 * * 1-5")
    with browser(api, api.api_key) as client:
        page = client.get("/console/schedules")
        assert page.status_code == 200
        assert page.headers["x-frame-options"] == "DENY"
        assert '<a href="/console/schedules">Schedules</a>' in page.text
        row = schedule_row(page.text, daily["id"])
        assert row.startswith("Daily claims PDF operations pdf daily at 06:00 (UTC)")
        assert "a@example.com, b@x.org" in row
        assert daily["next_run_at"][:16].replace("T", " ") + " UTC" in row
        assert "none yet" in row
        assert "Pause" in row
        assert "30 7 * * 1-5 (UTC)" in schedule_row(page.text, cron["id"])
        # Newest first.
        assert page.text.index(cron["id"]) < page.text.index(daily["id"])

        detail = client.get(f"/console/schedules/{daily['id']}")
        assert detail.status_code == 200
        assert "<h1>Schedule Daily claims PDF</h1>" in detail.text
        assert '"pages": 2' in detail.text
        assert "No run yet." in detail.text
        assert f'action="/console/schedules/{daily["id"]}/pause"' in detail.text
        missing = client.get("/console/schedules/00000000-0000-4000-8000-000000000000")
        assert missing.status_code == 404
        assert "SCHEDULE_NOT_FOUND" in missing.text


def test_pause_and_resume_through_the_forms(api: LiveServer) -> None:
    made = new_schedule(api, name="Pausable")
    url = f"{SCHEDULES}/{made['id']}"
    with browser(api, api.api_key) as client:
        token = csrf_of(client.get("/console/schedules").text)
        paused = client.post(
            f"/console/schedules/{made['id']}/pause", data={"csrf": token, "back": "list"}
        )
        assert paused.status_code == 303
        assert paused.headers["location"] == "/console/schedules?notice=paused"
        with api.client() as http:
            assert (http.get(url).json()["active"], http.get(url).json()["next_run_at"]) == (
                False,
                None,
            )
        listed = client.get(paused.headers["location"]).text
        assert 'id="notice"' in listed
        row = schedule_row(listed, made["id"])
        assert "paused" in row
        assert "Resume" in row

        resumed = client.post(f"/console/schedules/{made['id']}/resume", data={"csrf": token})
        assert resumed.status_code == 303
        assert resumed.headers["location"] == f"/console/schedules/{made['id']}?notice=resumed"
        with api.client() as http:
            again = http.get(url).json()
        assert (again["active"], again["next_run_at"]) == (True, made["next_run_at"])
        detail = client.get(resumed.headers["location"]).text
        assert "Resumed" in detail
        assert made["next_run_at"][:16].replace("T", " ") + " UTC" in detail


def test_a_schedule_form_without_its_csrf_token_is_refused(api: LiveServer) -> None:
    made = new_schedule(api, name="Guarded")
    with browser(api, api.api_key) as client:
        client.get("/console/schedules")  # a live session: only the token is missing
        for data in ({}, {"csrf": "forged"}):
            answer = client.post(f"/console/schedules/{made['id']}/pause", data=data)
            assert answer.status_code == 403
            assert "CSRF_FAILED" in answer.text
    with api.client() as http:
        still = http.get(f"{SCHEDULES}/{made['id']}").json()
    assert (still["active"], still["next_run_at"]) == (True, made["next_run_at"])
    with browser(api, None) as anonymous:
        for path in ("/console/schedules", f"/console/schedules/{made['id']}"):
            assert anonymous.get(path).status_code == 303
        answer = anonymous.post(f"/console/schedules/{made['id']}/pause", data={"csrf": "x"})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in")


def test_submitters_see_and_pause_their_own_schedules_only(api: LiveServer) -> None:
    erin, fred = api.create_key("erin"), api.create_key("fred")
    hers = new_schedule(api, erin, name="Erin's weekly", preset="weekly")
    his = new_schedule(api, fred, name="Fred's daily")
    with browser(api, fred) as client:
        listed = client.get("/console/schedules")
        assert hers["id"] not in listed.text
        assert "Erin&#39;s weekly" not in listed.text
        assert his["id"] in listed.text
        token = csrf_of(listed.text)
        for answer in (
            client.get(f"/console/schedules/{hers['id']}"),
            client.post(f"/console/schedules/{hers['id']}/pause", data={"csrf": token}),
        ):
            assert answer.status_code == 404
            assert "SCHEDULE_NOT_FOUND" in answer.text
    with api.client(api_key=erin) as http:
        assert http.get(f"{SCHEDULES}/{hers['id']}").json()["active"] is True
    with browser(api, erin) as client:
        assert hers["id"] in client.get("/console/schedules").text
    with browser(api, api.api_key) as client:  # an operator sees every owner's
        everyone = client.get("/console/schedules").text
        assert hers["id"] in everyone
        assert his["id"] in everyone
