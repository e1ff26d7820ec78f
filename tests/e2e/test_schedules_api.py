"""Schedules over REST on a live API: create, read, page, change, pause, delete, and bad input."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from app.db.models import ScheduleRow
from app.db.session import make_engine
from sqlalchemy import func, select

from tests.e2e.server import LiveServer

SCHEDULES = "/api/v1/reports/schedules"
MONTHLY: dict[str, Any] = {
    "name": "Monthly claims PDF",
    "report_type": "pdf",
    "params": {"pages": 3},
    "preset": "monthly",
    "at": "06:00",
    "timezone": "Europe/Paris",
    "recipients": ["claims@example.com", "Audit@Example.com"],
}


def _rows(server: LiveServer) -> int:
    engine = make_engine(server.database_url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(ScheduleRow)).scalar_one()
    engine.dispose()
    return int(count)


def test_a_schedule_is_created_read_changed_paused_resumed_and_deleted(
    client: httpx.Client,
) -> None:
    created = client.post(SCHEDULES, json=MONTHLY)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["cron"] == "0 6 1 * *"
    assert (schedule["preset"], schedule["at"]) == ("monthly", "06:00")
    assert schedule["params"] == {"pages": 3, "processing_time": 0.0, "seed": 0}
    assert schedule["recipients"] == ["claims@example.com", "Audit@example.com"]
    assert schedule["active"] is True
    assert schedule["next_run_at"].endswith(("T05:00:00Z", "T04:00:00Z"))  # 06:00 in Paris
    url = f"{SCHEDULES}/{schedule['id']}"
    assert client.get(url).json() == schedule
    assert schedule["id"] in [s["id"] for s in client.get(SCHEDULES).json()["items"]]

    paused = client.patch(url, json={"active": False}).json()
    assert (paused["active"], paused["next_run_at"]) == (False, None)
    resumed = client.patch(url, json={"active": True}).json()
    assert resumed["next_run_at"] == schedule["next_run_at"]
    edited = client.patch(url, json={"cron": "30 7 * * 1-5", "timezone": "UTC"}).json()
    assert (edited["cron"], edited["preset"], edited["at"]) == ("30 7 * * 1-5", None, None)
    assert edited["next_run_at"].endswith("T07:30:00Z")

    nulls = {"params": None, "recipients": None, "attach": None, "active": None, "name": None}
    unchanged = client.patch(url, json=nulls).json()
    assert unchanged == {**edited, "updated_at": ANY}
    refused = client.patch(url, json={"timezone": "Mars/Olympus"})
    assert (refused.status_code, refused.json()["error"]) == (422, "INVALID_SCHEDULE")
    assert client.get(url).json() == unchanged  # nothing of a refused change is kept

    runs = client.get(f"{url}/runs")
    assert (runs.status_code, runs.json()) == (200, {"items": [], "next": None})
    assert client.delete(url).status_code == 204
    gone = client.get(url)
    assert (gone.status_code, gone.json()["error"]) == (404, "SCHEDULE_NOT_FOUND")
    assert client.delete(url).status_code == 404


def test_schedules_are_owner_scoped_and_operators_see_all(server: LiveServer) -> None:
    alice = server.create_key("alice")
    bob = server.create_key("bob")
    with server.client(api_key=alice) as as_alice, server.client(api_key=bob) as as_bob:
        mine = as_alice.post(SCHEDULES, json=MONTHLY).json()
        url = f"{SCHEDULES}/{mine['id']}"
        assert mine["owner"] == "alice"
        assert as_bob.get(url).status_code == 404
        assert as_bob.patch(url, json={"active": False}).status_code == 404
        assert as_bob.delete(url).status_code == 404
        assert mine["id"] not in [s["id"] for s in as_bob.get(SCHEDULES).json()["items"]]
        assert as_bob.get(f"{url}/runs").status_code == 404
    with server.client() as operator:
        assert operator.get(url).json()["owner"] == "alice"


def test_schedules_page_newest_first(client: httpx.Client) -> None:
    made = [client.post(SCHEDULES, json={**MONTHLY, "name": f"page {n}"}).json() for n in range(3)]
    first = client.get(SCHEDULES, params={"limit": 2}).json()
    second = client.get(SCHEDULES, params={"limit": 2, "cursor": first["next"]}).json()
    seen = [s["id"] for s in first["items"] + second["items"]]
    assert seen[:3] == [s["id"] for s in reversed(made)]


def _with(**changes: Any) -> dict[str, Any]:
    return {**MONTHLY, **changes}


BAD: list[tuple[dict[str, Any], str, str]] = [
    (_with(preset=None, at=None, cron="61 * * * *"), "INVALID_SCHEDULE", "cron: "),
    (_with(preset=None, at=None, cron="0 6 * * * *"), "INVALID_SCHEDULE", "cron: "),
    (_with(preset=None, at=None, cron="*/5 * * * *"), "INVALID_SCHEDULE", "SCHEDULE_MIN_INTERVAL"),
    (_with(preset=None, at=None), "INVALID_SCHEDULE", "cron: "),
    (_with(cron="0 6 * * *"), "INVALID_SCHEDULE", "cron: "),
    (_with(at="6h"), "INVALID_SCHEDULE", "at: "),
    (_with(at=None), "INVALID_SCHEDULE", "at: "),
    (_with(timezone="Mars/Olympus"), "INVALID_SCHEDULE", "timezone: "),
    (_with(recipients=[]), "INVALID_SCHEDULE", "recipients: "),
    (
        _with(recipients=["claims@example.com", "not-an-email"]),
        "INVALID_RECIPIENTS",
        "recipients[1]",
    ),
    (
        _with(recipients=[f"r{n}@example.com" for n in range(21)]),
        "INVALID_RECIPIENTS",
        "at most 20",
    ),
    (_with(params={"pages": 0}), "INVALID_PARAMS", "pages"),
    (_with(params={"rows": 10}), "INVALID_PARAMS", "rows"),
    (_with(report_type="word"), "VALIDATION_ERROR", "report_type"),
    (_with(report_type=None), "VALIDATION_ERROR", "report_type"),
    (_with(recipients=None, params=None), "INVALID_SCHEDULE", "recipients: "),
    (_with(preset=None, at=None, cron=""), "INVALID_SCHEDULE", "cron: "),
    (_with(preset="hourly"), "VALIDATION_ERROR", "preset"),
    (_with(colour="blue"), "VALIDATION_ERROR", "colour"),
    ({k: v for k, v in MONTHLY.items() if k != "name"}, "VALIDATION_ERROR", "name"),
]


@pytest.mark.parametrize(("body", "code", "named"), BAD)
def test_bad_schedules_get_a_named_422_and_write_nothing(
    client: httpx.Client, server: LiveServer, body: dict[str, Any], code: str, named: str
) -> None:
    before = _rows(server)
    response = client.post(SCHEDULES, json=body)
    assert (response.status_code, response.json()["error"]) == (422, code), response.text
    assert named in response.json()["message"]
    assert _rows(server) == before


def test_an_enqueue_names_its_recipients_or_gets_a_named_422(client: httpx.Client) -> None:
    bad = client.post(
        "/api/v1/reports/heavy",
        json={"report_type": "pdf", "pages": 1, "recipients": ["ok@example.com", "nope"]},
    )
    assert (bad.status_code, bad.json()["error"]) == (422, "INVALID_RECIPIENTS")
    assert "recipients[1]" in bad.json()["message"]
