"""Page cursors as the API and the console hand them out: opaque, URL-safe text."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from app.domain.errors import InvalidInput
from app.domain.ledger import Cursor


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created, _, ident = raw.partition("|")
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive")
        return Cursor(created_at=at, id=UUID(ident))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "cursor is not a value returned as `next` by this API.", code="INVALID_CURSOR"
        ) from exc
