"""The rate limit covers every route that knows its caller, not only the enqueue routes.

The real API on a PostgreSQL ledger of its own and the real Redis, with a budget of 3
requests an hour per caller: reads, the console's pages and admin routes spend it, each
key its own; probes and ``/metrics`` never do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app.domain.auth import Role
from app.domain.jobs import utcnow
from app.main import create_app
from app.services.auth import create_api_key
from fastapi.testclient import TestClient

from tests.integration.workers import own_ledger, settings_from

BUDGET = 3


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    limit = {"rate_limit_requests": BUDGET, "rate_limit_window": 3600.0}
    with (
        own_ledger(tmp_path, "limit") as env,
        TestClient(create_app(settings_from(env, **limit)), follow_redirects=False) as client,
    ):
        yield client


def new_key(api: TestClient, owner: str) -> str:
    container = api.app.state.container  # type: ignore[attr-defined]
    _, key = create_api_key(container.api_keys, owner=owner, role=Role.OPERATOR, now=utcnow())
    return key


def assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"] == "RATE_LIMITED"
    assert int(answer.headers["retry-after"]) >= 1


def test_a_read_route_is_refused_past_the_budget(api: TestClient) -> None:
    headers = {"X-API-Key": new_key(api, "reader")}
    codes = [api.get("/api/v1/reports/jobs", headers=headers).status_code for _ in range(BUDGET)]
    assert codes == [200] * BUDGET
    assert_refused(api.get("/api/v1/reports/jobs", headers=headers))
    assert_refused(api.get("/api/v1/admin/traffic", headers=headers))  # the same caller
    other = {"X-API-Key": new_key(api, "other")}  # each key has a budget of its own
    assert api.get("/api/v1/admin/traffic", headers=other).status_code == 200


def test_a_console_page_is_refused_past_its_keys_budget(api: TestClient) -> None:
    signed_in = api.post("/console/sign-in", data={"api_key": new_key(api, "console")})
    assert signed_in.status_code == 303, signed_in.text
    codes = [api.get("/console/jobs").status_code for _ in range(BUDGET)]
    assert codes == [200] * BUDGET
    assert_refused(api.get("/console/jobs"))
    assert_refused(api.get("/console/api/progress"))


def test_probes_and_metrics_are_never_limited(api: TestClient) -> None:
    for _ in range(5 * BUDGET):
        assert api.get("/health/ready").status_code == 200
        assert api.get("/metrics").status_code == 200
        assert api.get("/health/live").status_code == 200
