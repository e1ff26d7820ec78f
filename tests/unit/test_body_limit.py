"""Request body size limit: 413 ``PAYLOAD_TOO_LARGE`` before (or while) the body is read."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from app.api.middleware import BodySizeLimitMiddleware
from app.core.config import Settings
from app.main import create_app
from fastapi.testclient import TestClient
from httpx import Response
from starlette.types import Message, Receive, Scope, Send

LIMIT = 1024
HEAVY = "/api/v1/reports/heavy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The real app (inline backend, migrated SQLite, no Redis) with a 1 KiB body limit."""
    settings = Settings(
        environment="development",
        database_url=sqlite_url,
        data_dir=tmp_path,
        dispatch_backend="inline",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        max_body_bytes=LIMIT,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def invalid_body(size: int) -> bytes:
    """A JSON report request of exactly ``size`` bytes that fails validation (pages: text)."""
    empty = json.dumps({"report_type": "pdf", "pages": ""}).encode()
    body = json.dumps({"report_type": "pdf", "pages": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


def assert_too_large(response: Response) -> None:
    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in body["message"]
    assert "timestamp" in body
    assert response.headers["x-request-id"], "the 413 goes through the request-id middleware"


def test_declared_length_over_the_limit_is_refused(client: TestClient) -> None:
    response = client.post(
        HEAVY, content=invalid_body(LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert_too_large(response)


def test_chunked_body_over_the_limit_is_refused(client: TestClient) -> None:
    body = invalid_body(LIMIT * 3)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    response = client.post(HEAVY, content=chunks(), headers={"content-type": "application/json"})
    assert_too_large(response)


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_a_body_up_to_the_limit_reaches_validation(client: TestClient, size: int) -> None:
    response = client.post(
        HEAVY, content=invalid_body(size), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "VALIDATION_ERROR"


def test_requests_without_a_body_are_untouched(client: TestClient) -> None:
    assert client.get("/api/v1/reports/jobs").status_code == 200


# --------------------------------------------------------------------------- raw ASGI


class Recorder:
    """An ASGI app reading the whole body, then answering 200 with its length."""

    def __init__(self) -> None:
        self.received = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            self.received += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(self.received)).encode()})


def call(
    app: BodySizeLimitMiddleware, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status: int = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_streamed_chunks_never_give_the_app_more_than_the_limit() -> None:
    inner = Recorder()
    status, body = call(BodySizeLimitMiddleware(inner, max_bytes=1000), [b"a" * 400] * 3, [])
    assert status == 413
    assert json.loads(body)["error"] == "PAYLOAD_TOO_LARGE"
    assert inner.received == b"a" * 800


def test_a_lying_content_length_is_still_counted() -> None:
    inner = Recorder()
    headers = [(b"content-length", b"10")]
    status, _ = call(BodySizeLimitMiddleware(inner, max_bytes=1000), [b"a" * 1001], headers)
    assert status == 413
    assert inner.received == b""


def test_declared_length_over_the_limit_never_reaches_the_app() -> None:
    inner = Recorder()
    headers = [(b"content-length", b"1001")]
    status, _ = call(BodySizeLimitMiddleware(inner, max_bytes=1000), [b"a" * 1001], headers)
    assert status == 413
    assert inner.received == b""


def test_a_body_of_exactly_the_limit_passes_whole() -> None:
    inner = Recorder()
    status, body = call(BodySizeLimitMiddleware(inner, max_bytes=1000), [b"a" * 500] * 2, [])
    assert (status, body) == (200, b"1000")
