"""The download's byte ranges (RFC 9110) over a real local store, through an ASGI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from app.api.download import artifact_response
from app.domain.jobs import Artifact
from app.storage.local import LocalArtifactStore
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Artifact]]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    job_id = uuid4()
    temp = store.temp_path(job_id, "bin")
    temp.write_bytes(BODY)
    artifact = store.save(
        temp, job_id=job_id, filename="r.bin", content_type="application/pdf", attempt=1
    )
    app = FastAPI()

    @app.api_route("/r", methods=["GET", "HEAD"])
    def download(request: Request) -> Response:
        return artifact_response(request, store, artifact, redirect_seconds=0)

    with TestClient(app) as client:
        yield client, artifact


@pytest.mark.parametrize(
    ("header", "status", "first", "last"),
    [
        ("bytes=0-99", 206, 0, 99),
        ("bytes=10000-", 206, 10000, 10239),
        ("bytes=-40", 206, 10200, 10239),
        ("bytes=10200-99999", 206, 10200, 10239),  # the end clipped to the last byte
        ("bytes=0-1,5-6", 200, 0, 10239),  # several ranges: the whole file (allowed)
        ("items=0-1", 200, 0, 10239),  # another unit: ignored
        ("bytes=10240-", 416, None, None),
        ("bytes=9-5", 416, None, None),
        ("bytes=-0", 416, None, None),
    ],
)
def test_ranges(
    served: tuple[TestClient, Artifact],
    header: str,
    status: int,
    first: int | None,
    last: int | None,
) -> None:
    client, _ = served
    answer = client.get("/r", headers={"Range": header})
    assert answer.status_code == status
    if first is None or last is None:
        assert answer.headers["content-range"] == f"bytes */{len(BODY)}"
        return
    assert answer.content == BODY[first : last + 1]
    assert int(answer.headers["content-length"]) == last + 1 - first
    if status == 206:
        assert answer.headers["content-range"] == f"bytes {first}-{last}/{len(BODY)}"


def test_head_and_if_range(served: tuple[TestClient, Artifact]) -> None:
    client, artifact = served
    head = client.head("/r")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(BODY))
    assert head.headers["etag"] == f'"{artifact.sha256}"'
    assert head.headers["content-disposition"] == 'attachment; filename="r.bin"'
    fresh = client.get("/r", headers={"Range": "bytes=0-9", "If-Range": f'"{artifact.sha256}"'})
    assert (fresh.status_code, fresh.content) == (206, BODY[:10])
    stale = client.get("/r", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, BODY)


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/pdf"),
        ("*/*", "application/pdf"),
        ("application/*", "application/pdf"),
        ("application/pdf, application/octet-stream", "application/pdf"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/octet-stream, */*;q=0.8", "application/octet-stream"),
        ("application/pdf;q=0.5, application/octet-stream", "application/octet-stream"),
        ("application/octet-stream;q=0", "application/pdf"),
        ("application/octet-stream;q=zero, text/html", "application/pdf"),
    ],
)
def test_the_file_keeps_its_media_type_unless_accept_prefers_bytes(
    served: tuple[TestClient, Artifact], accept: str | None, media_type: str
) -> None:
    client, _ = served
    headers = {"Accept": accept} if accept is not None else {}
    for answer in (client.get("/r", headers=headers), client.head("/r", headers=headers)):
        assert answer.headers["content-type"] == media_type
        assert answer.headers["vary"] == "Accept"
    assert client.get("/r", headers=headers).content == BODY
