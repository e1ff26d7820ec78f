"""One live API per database kind, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, running


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        with running(data_dir, f"sqlite:///{data_dir / 'reports.db'}") as live:
            yield live
        return
    # A database of its own: the integration tests' rows are not this API's to recover.
    with fresh_pg_database("reports_e2e") as url, running(data_dir, url) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http
