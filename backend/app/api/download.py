"""The download's HTTP side: one byte range (RFC 9110), streamed from the artifact store.

The store is asked before the status line is sent, so a store that does not answer gives
503 ``STORAGE_UNAVAILABLE``, never a half-sent 200. ``HEAD`` answers from the ledger row
(size, type, name, sha256 as the ETag) without touching the store.

Every report file is a download, never an API object. The OpenAPI document declares
``application/octet-stream`` first, then each media type a file may have: a binary string,
except the dummy's JSON file, described as the JSON document it is (under a JSON media type a
schema describes the parsed document; a string there would be false, and schemathesis says
so). A client that picks one parser per response takes the first type it knows:
openapi-python-client reads the bytes of every report. The file goes out with its own media
type unless the request's ``Accept`` prefers ``application/octet-stream``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from app.domain.jobs import Artifact
from app.domain.ports import ArtifactStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
BYTES = "application/octet-stream"
_FILE = {"type": "string", "format": "binary"}
_JSON_FILE = {
    "type": "object",
    "description": "A report file that is a JSON document (the dummy report); "
    "its bytes as application/octet-stream",
}


def file_content(media_types: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The OpenAPI ``content`` of a report file: ``application/octet-stream``, then each type.

    Args:
        media_types: Every media type a report file may have.

    Returns:
        Each media type with its schema: a binary string, or for JSON the document.
    """
    return {
        media: {"schema": dict(_JSON_FILE if _is_json(media) else _FILE)}
        for media in dict.fromkeys((BYTES, *media_types))
    }


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


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
    media_type = _media_type(request.headers.get("accept"), artifact.content_type)
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{artifact.sha256}"',
        "content-disposition": _disposition(artifact.filename),
        "vary": "Accept",
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
        return Response(status_code=status, headers=headers, media_type=media_type)
    chunks = store.read(artifact, start, end)
    return StreamingResponse(chunks, status_code=status, headers=headers, media_type=media_type)


def _media_type(accept: str | None, own: str) -> str:
    """``own``, or ``application/octet-stream`` when ``accept`` ranks that strictly higher."""
    if not accept:
        return own
    ranks: dict[str, float] = {}
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[name.lower()] = quality

    def rank(media: str) -> float:
        family = media.split("/", 1)[0] + "/*"
        for wanted in (media, family, "*/*"):  # the most specific range decides (RFC 9110)
            if wanted in ranks:
                return ranks[wanted]
        return 0.0

    return BYTES if rank(BYTES) > rank(own.lower()) else own


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
