"""HTTP metrics by endpoint (counts, body sizes, bounded labels) and the database metrics of
an engine (statement time by operation, pool size and room), read from this process's
registry. Each test uses its own route templates, so every series starts at 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from app.api.observability import HttpMetricsMiddleware, TrackedRoute, declared_body_size
from app.db.metrics import operation_of, silence_pool
from app.db.session import make_engine
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import text

PREFIX = "/unit-http-metrics"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    router = APIRouter(prefix=PREFIX, route_class=TrackedRoute)

    @router.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "pad": "x" * 500}

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    app = FastAPI()
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(router)
    with TestClient(app) as test_client:
        yield test_client


def test_requests_are_counted_by_endpoint_template_not_by_path(client: TestClient) -> None:
    endpoint = f"{PREFIX}/items/{{item_id}}"
    for n in range(3):
        assert client.get(f"{PREFIX}/items/a{n}").status_code == 200
    ok = {"method": "GET", "endpoint": endpoint}
    assert sample("http_requests_total", **ok, status="200") == 3
    assert sample("http_request_duration_seconds_count", **ok) == 3
    assert sample("http_request_size_bytes_sum", **ok) == 0  # a GET has no body
    body = len(client.get(f"{PREFIX}/items/b0").content)  # as long as a0, a1, a2
    assert sample("http_response_size_bytes_count", **ok) == 4
    assert sample("http_response_size_bytes_sum", **ok) == 4 * body
    assert sample("http_response_size_bytes_bucket", **ok, le="256.0") == 0
    assert sample("http_response_size_bytes_bucket", **ok, le="1024.0") == 4
    assert sample("http_requests_in_progress", **ok) == 0
    endpoints = {
        s.labels["endpoint"]
        for m in REGISTRY.collect()
        for s in m.samples
        if "endpoint" in s.labels
    }
    assert {e for e in endpoints if e.startswith(f"{PREFIX}/items/")} == {endpoint}


def test_request_body_size_declared_or_streamed(client: TestClient) -> None:
    labels = {"method": "POST", "endpoint": f"{PREFIX}/echo"}
    assert client.post(f"{PREFIX}/echo", content=b"x" * 3000).json() == {"read": 3000}
    assert sample("http_request_size_bytes_sum", **labels) == 3000

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b"y" * 700
        yield b"z" * 300

    assert client.post(f"{PREFIX}/echo", content=chunks()).json() == {"read": 1000}
    assert sample("http_request_size_bytes_sum", **labels) == 4000
    assert sample("http_request_size_bytes_count", **labels) == 2
    assert sample("http_requests_total", **labels, status="200") == 2


def test_unknown_paths_and_methods_have_one_label_value_each(client: TestClient) -> None:
    before = sample("http_requests_total", method="GET", endpoint="unmatched", status="404")
    for n in range(3):
        assert client.get(f"{PREFIX}/nowhere/{n}").status_code == 404
    after = sample("http_requests_total", method="GET", endpoint="unmatched", status="404")
    assert after - before == 3
    for verb in ("BREW", "WHEN"):
        assert client.request(verb, f"{PREFIX}/echo").status_code == 405
    other = {"method": "other", "endpoint": f"{PREFIX}/echo", "status": "405"}
    assert sample("http_requests_total", **other) == 2


def test_declared_body_size_reads_the_headers() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"headers": list(headers)}

    assert declared_body_size(scope((b"content-length", b"42"))) == 42
    assert declared_body_size(scope((b"transfer-encoding", b"chunked"))) is None
    assert declared_body_size(scope((b"content-length", b"nope"))) == 0
    assert declared_body_size(scope()) == 0


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT 1", "select"),
        ("  \n(select a from t)", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("update t set a = 1", "update"),
        ("DELETE FROM t", "delete"),
        ("WITH x AS (SELECT 1) UPDATE t SET a = 1", "update"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
        ("PRAGMA journal_mode=WAL", "other"),
        ("", "other"),
    ],
)
def test_operation_of(statement: str, operation: str) -> None:
    assert operation_of(statement) == operation


def test_engine_times_statements_and_publishes_its_pool(tmp_path: Path) -> None:
    before = {
        op: sample("db_query_duration_seconds_count", operation=op)
        for op in ("select", "insert", "update", "delete", "other")
    }
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        assert sample("db_connection_pool_size") == 15  # SQLite: QueuePool(5, 10)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (a INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.execute(text("UPDATE t SET a = 2"))
            assert conn.execute(text("SELECT a FROM t")).scalar() == 2
            conn.execute(text("SELECT a FROM t"))
            conn.execute(text("DELETE FROM t"))
            assert sample("db_connection_pool_available") == 14  # this one checked out
        counts = {
            op: sample("db_query_duration_seconds_count", operation=op) - before[op]
            for op in before
        }
        assert counts == {"select": 2, "insert": 1, "update": 1, "delete": 1, "other": 1}
        assert sample("db_connection_pool_available") == 15  # back: all free again

        held = [engine.connect() for _ in range(15)]
        assert sample("db_connection_pool_available") == 0
        held.pop().close()
        assert sample("db_connection_pool_available") == 1
        for conn in held:
            conn.close()
        assert sample("db_connection_pool_available") == 15
        engine.dispose(close=False)  # as a forked child does: a new, empty pool
        with engine.connect():
            assert sample("db_connection_pool_available") == 14
            assert sample("db_connection_pool_size") == 15
        assert sample("db_connection_pool_available") == 15
        silence_pool(engine)  # as an RQ work horse does: its worker's gauges stand for it
        with engine.connect():
            assert sample("db_connection_pool_available") == 15
    finally:
        engine.dispose()
