"""The traffic dial and its guard across two real API processes on one PostgreSQL ledger,
with a real Celery worker and a real RQ worker.

A move made through one API is applied by the other within seconds (its next jobs land on
the other backend: the ``backend`` column of their rows); every change has its audit row;
a submitter gets 403 and bad values 422 with stable codes; when Celery jobs fail after a
step (``simulate_failures``), one replica's guard rolls the dial back, once, audited,
logged and counted; a pinned dial is left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.e2e.fleet import migration_fleet
from tests.e2e.server import LiveServer
from tests.integration.ops import ledger, scrape, total, value, wait_until

pytestmark = pytest.mark.timeout(240)

TRAFFIC = "/api/v1/admin/traffic"
DUMMY = "/api/v1/reports/dummy"
#: A move is applied everywhere within TRAFFIC_POLL_SECONDS (0.5 s here); the bound leaves
#: room for a loaded 2-core machine.
APPLY_BOUND = 5.0
MIN_JOBS = 3


@dataclass
class Fleet:
    a: LiveServer
    b: LiveServer
    database_url: str

    def apis(self) -> tuple[LiveServer, LiveServer]:
        return self.a, self.b


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    data = tmp_path_factory.mktemp("traffic")
    settings = {
        "TRAFFIC_GUARD_WINDOW": "300",
        "TRAFFIC_GUARD_MIN_JOBS": str(MIN_JOBS),
        "LOG_LEVEL": "DEBUG",  # the guard's record of each judgement (traffic.guard.checked)
    }
    with migration_fleet(data, apis=2, **settings) as ([a, b], url):
        yield Fleet(a, b, url)


def dial(server: LiveServer) -> dict[str, Any]:
    with server.client() as http:
        answer = http.get(TRAFFIC)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def move(server: LiveServer, **body: Any) -> dict[str, Any]:
    with server.client() as http:
        answer = http.put(TRAFFIC, json=body)
    assert answer.status_code == 200, answer.text
    moved: dict[str, Any] = answer.json()
    return moved


def history(server: LiveServer) -> list[dict[str, Any]]:
    with server.client() as http:
        items: list[dict[str, Any]] = http.get(f"{TRAFFIC}/history").json()["items"]
    return items


def applied(server: LiveServer, version: int) -> bool:
    return dial(server)["applied_version"] == version


def enqueue(server: LiveServer, **params: Any) -> str:
    with server.client() as http:
        answer = http.post(DUMMY, json={"processing_time": 0, **params})
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def rows(fleet: Fleet, job_ids: list[str], timeout: float = 40) -> dict[str, tuple[str, str]]:
    """(backend, status) of each job's ledger row, once every one is finished."""
    with ledger(fleet.database_url) as repo:

        def read() -> dict[str, tuple[str, str]]:
            jobs = [repo.get(UUID(j)) for j in job_ids]
            return {
                str(j.id): (j.backend.value if j.backend else "", j.status.value)
                for j in jobs
                if j is not None
            }

        wait_until(
            lambda: all(s in ("completed", "failed") for _, s in read().values()), timeout, 0.1
        )
        return read()


def reset(fleet: Fleet) -> int:
    """All RQ, unpinned, on both replicas; returns the dial's version."""
    state = move(fleet.a, celery_percent=0, overrides={}, pinned=False, reason="test baseline")
    wait_until(lambda: applied(fleet.b, state["version"]), APPLY_BOUND, 0.1)
    return int(state["version"])


def rollbacks(fleet: Fleet) -> float:
    return sum(
        total(scrape(f"{s.url}/metrics"), "report_traffic_rollbacks_total") for s in fleet.apis()
    )


def test_a_move_on_one_api_is_applied_by_the_other(fleet: Fleet) -> None:
    reset(fleet)
    before = [enqueue(fleet.b) for _ in range(3)]
    assert {b for b, _ in rows(fleet, before).values()} == {"rq"}

    moved = move(fleet.a, celery_percent=100, reason="phase 2: every job on Celery")
    started = time.monotonic()
    assert moved["celery_percent"] == 100
    assert moved["changed_by"] == "operations"
    # B routes by the new value within seconds, without a restart.
    took = wait_until(lambda: applied(fleet.b, moved["version"]), APPLY_BOUND, 0.05)
    after = [enqueue(fleet.b) for _ in range(3)]
    assert took < APPLY_BOUND
    assert set(rows(fleet, after).values()) == {("celery", "completed")}
    assert time.monotonic() - started < 60

    change = history(fleet.b)[0]
    assert change["kind"] == "operator"
    assert change["actor"] == "operations"
    assert change["before"] == {"celery_percent": 0, "overrides": {}}
    assert change["after"] == {"celery_percent": 100, "overrides": {}}
    assert change["reason"] == "phase 2: every job on Celery"
    a_metrics, b_metrics = (scrape(f"{s.url}/metrics") for s in fleet.apis())
    # The change is counted once, by the replica that made it; both route by it.
    assert value(b_metrics, "report_traffic_changes_total", kind="operator") == 0
    assert value(a_metrics, "report_traffic_changes_total", kind="operator") >= 1
    for samples in (a_metrics, b_metrics):
        assert value(samples, "report_traffic_celery_percent", job_type="dummy") == 100


def test_submitters_get_403_and_bad_values_422(fleet: Fleet) -> None:
    version = reset(fleet)
    submitter = fleet.a.create_key("carol", "submitter")
    with fleet.a.client(api_key=submitter) as http:
        for answer in (http.get(TRAFFIC), http.put(TRAFFIC, json={"celery_percent": 50})):
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"] == "FORBIDDEN"
    with fleet.b.client() as http:
        for body, code in (
            ({"celery_percent": 101, "reason": "r"}, "INVALID_TRAFFIC_SPLIT"),
            ({"celery_percent": -1, "reason": "r"}, "INVALID_TRAFFIC_SPLIT"),
            ({"overrides": {"invoice": 50}, "reason": "r"}, "INVALID_TRAFFIC_SPLIT"),
            ({"overrides": {"pdf": 500}, "reason": "r"}, "INVALID_TRAFFIC_SPLIT"),
            ({"celery_percent": 50}, "TRAFFIC_REASON_REQUIRED"),
            ({"celery_percent": 50, "reason": "  "}, "TRAFFIC_REASON_REQUIRED"),
            ({"celery_percent": "half", "reason": "r"}, "VALIDATION_ERROR"),
            ({"celery_percent": 50, "reason": "r", "extra": 1}, "VALIDATION_ERROR"),
        ):
            answer = http.put(TRAFFIC, json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["error"] == code, (body, answer.text)
    state = dial(fleet.a)
    assert (state["version"], state["celery_percent"]) == (version, 0)
    assert history(fleet.a)[0]["reason"] == "test baseline"


def rollback_lines(fleet: Fleet) -> list[dict[str, Any]]:
    """The ``traffic.guard.rolled_back`` log records of both replicas."""
    return [
        json.loads(line)
        for s in fleet.apis()
        for line in s.logs().splitlines()
        if "traffic.guard.rolled_back" in line and line.startswith("{")
    ]


def test_the_guard_rolls_back_a_step_that_makes_celery_fail(fleet: Fleet) -> None:
    reset(fleet)
    counted = rollbacks(fleet)
    logged_before = len(rollback_lines(fleet))
    last_change = history(fleet.a)[0]["id"]
    rows(fleet, [enqueue(fleet.a) for _ in range(MIN_JOBS)])  # RQ's baseline: no failure
    moved = move(fleet.a, celery_percent=100, reason="step to 100")
    wait_until(lambda: applied(fleet.b, moved["version"]), APPLY_BOUND, 0.05)

    failing = [enqueue(fleet.b, simulate_failures=5) for _ in range(MIN_JOBS)]
    assert set(rows(fleet, failing).values()) == {("celery", "failed")}
    wait_until(lambda: dial(fleet.b)["celery_percent"] == 0, 15, 0.2)

    change = history(fleet.a)[0]
    assert (change["kind"], change["actor"]) == ("rollback", "guard")
    assert change["before"]["celery_percent"] == 100
    assert change["after"]["celery_percent"] == 0
    assert change["reason"].startswith(f"failure_rate: Celery failed {MIN_JOBS}/{MIN_JOBS}")
    since = [c for c in history(fleet.a) if c["id"] > last_change]
    assert [c["kind"] for c in since] == ["rollback", "operator"]  # newest first
    assert rollbacks(fleet) == counted + 1  # one replica's rollback landed, not two
    logged = rollback_lines(fleet)[logged_before:]
    assert len(logged) == 1
    assert logged[0]["cause"] == "failure_rate"
    # Every replica routes by the rolled back value: the next jobs are RQ's again.
    state = dial(fleet.a)
    for server in fleet.apis():
        wait_until(lambda s=server: applied(s, state["version"]), APPLY_BOUND, 0.05)
    again = [enqueue(fleet.b), enqueue(fleet.a)]
    assert set(rows(fleet, again).values()) == {("rq", "completed")}


def guard_checks(server: LiveServer) -> list[dict[str, Any]]:
    """The ``traffic.guard.checked`` records of ``server``: one per judgement of its guard."""
    return [
        record
        for line in server.logs().splitlines()
        if "traffic.guard.checked" in line and line.startswith("{")
        for record in [json.loads(line)]
        if record.get("event") == "traffic.guard.checked"
    ]


def test_a_pinned_dial_is_not_rolled_back(fleet: Fleet) -> None:
    reset(fleet)
    counted = rollbacks(fleet)
    moved = move(fleet.a, celery_percent=100, pinned=True, reason="pinned: I watch it")
    wait_until(lambda: applied(fleet.b, moved["version"]), APPLY_BOUND, 0.05)
    failing = [enqueue(fleet.b, simulate_failures=5) for _ in range(MIN_JOBS)]
    assert set(rows(fleet, failing).values()) == {("celery", "failed")}
    # Both replicas' guards judge the pinned dial after the failures are in the ledger: two
    # more records each (the first may have begun before), every one of them on the pinned
    # version, and the guard left it alone.
    for server in fleet.apis():
        seen = len(guard_checks(server))
        wait_until(lambda s=server, n=seen: len(guard_checks(s)) >= n + 2, 10, 0.1)
        after = guard_checks(server)[seen:]
        assert {(c["action"], c["version"]) for c in after} == {("skipped", moved["version"])}
    state = dial(fleet.b)
    assert (state["celery_percent"], state["pinned"], state["version"]) == (
        100,
        True,
        moved["version"],
    )
    assert history(fleet.a)[0]["reason"] == "pinned: I watch it"
    assert rollbacks(fleet) == counted
    # Unpinned, the guard judges again: new failures roll the step back.
    move(fleet.a, pinned=False, reason="guard back on")
    rows(fleet, [enqueue(fleet.b, simulate_failures=5) for _ in range(MIN_JOBS)])
    wait_until(lambda: dial(fleet.b)["celery_percent"] == 0, 15, 0.2)
    assert rollbacks(fleet) == counted + 1


def test_no_key_no_dial(fleet: Fleet) -> None:
    version = dial(fleet.a)["version"]
    with httpx.Client(base_url=fleet.a.url, timeout=10) as anonymous:
        assert anonymous.get(TRAFFIC).status_code == 401
        put = anonymous.put(TRAFFIC, json={"celery_percent": 100, "reason": "x"})
        assert put.status_code == 401
    assert dial(fleet.a)["version"] == version
