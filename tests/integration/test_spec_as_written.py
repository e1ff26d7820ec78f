"""The product spec's own tests (002, section "Tests"), as it wrote them.

Only the patch target is a real dotted name: ``app.dispatch.router.CELERY_AVAILABLE``, the
switch the router reads at each choice (seeded by the ``CELERY_AVAILABLE`` setting). The
``client`` is the real API on a PostgreSQL ledger of its own and the real Redis, with no
worker running, and a split where detection alone would answer the other way round: pdf
jobs prefer RQ, dummy jobs Celery (with no worker, a job waits on the broker it prefers).
So only the switch sends the pdf to Celery and the dummy to RQ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
from app.domain.auth import Role
from app.domain.jobs import utcnow
from app.main import create_app
from app.services.auth import create_api_key
from fastapi.testclient import TestClient

from tests.integration.workers import own_ledger, settings_from


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The API (auth on, as outside development) with a submitter's key in every request."""
    split = {"celery_traffic_percent": 100, "celery_traffic_overrides": {"pdf": 0}}
    with (
        own_ledger(tmp_path, "spec") as env,
        TestClient(create_app(settings_from(env, **split))) as api,
    ):
        container = api.app.state.container  # type: ignore[attr-defined]
        _, key = create_api_key(container.api_keys, owner="spec", role=Role.SUBMITTER, now=utcnow())
        api.headers["X-API-Key"] = key
        yield api


# Test avec Celery activé
def test_celery_heavy_report(client: TestClient) -> None:
    with patch("app.dispatch.router.CELERY_AVAILABLE", True):
        resp = client.post("/api/v1/reports/heavy?report_type=pdf")
        assert resp.status_code == 200
    assert resp.json()["backend"] == "celery"


# Test fallback RQ
def test_celery_unavailable_fallback(client: TestClient) -> None:
    with patch("app.dispatch.router.CELERY_AVAILABLE", False):
        resp = client.post("/api/v1/reports/dummy")
        # Devrait utiliser RQ
        assert resp.status_code == 200, resp.text
        assert resp.json()["backend"] == "rq"
