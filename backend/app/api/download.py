"""The download's HTTP side: one byte range (RFC 9110), streamed from the artifact store.

The store is asked before the status line is sent, so a store that does not answer gives
503 ``STORAGE_UNAVAILABLE``, never a half-sent 200. ``HEAD`` answers from the ledger row
(size, type, name, sha256 as the ETag) without touching the store.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from app.domain.jobs import Artifact
from app.domain.ports import ArtifactStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def artifact_response(
    request: Request, store: ArtifactStore, artifact: Artifact, *, redirect_seconds: int
) -> Response:
    """200 or 206 with the report's bytes, 416 for a range past its end; with
    ``redirect_seconds`` > 0, a 307 to a URL of the store valid that long (if it has any)."""
    if redirect_seconds > 0:
        url = store.url_for(artifact, expires=redirect_seconds)
        if url is not None:
            return RedirectResponse(url, status_code=307)
    size = artifact.size_bytes
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{artifact.sha256}"',
        "content-disposition": _disposition(artifact.filename),
    }
    try:
        wanted = _range(request, artifact, size)
    except _Unsatisfiable:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = wanted or (0, size - 1)
    status = 206 if wanted else 200
    if wanted:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(max(end - start + 1, 0))
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type=artifact.content_type)
    chunks = store.read(artifact, start, end)
    return StreamingResponse(
        chunks, status_code=status, headers=headers, media_type=artifact.content_type
    )


class _Unsatisfiable(Exception):
    pass


def _range(request: Request, artifact: Artifact, size: int) -> tuple[int, int] | None:
    """The one range asked for; None for the whole file (no Range, several ranges, a
    stale If-Range, or a header this parser does not take: all allowed by RFC 9110)."""
    header = request.headers.get("range")
    if not header:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != f'"{artifact.sha256}"':
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _Unsatisfiable
    return start, end


def _disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"
