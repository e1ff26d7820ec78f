"""The SQL API-key repository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKeyRow
from app.domain.auth import ApiKey, Role


class SqlApiKeyRepository:
    """:class:`~app.domain.auth.ApiKeyRepository` over SQLAlchemy."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, key: ApiKey, secret_hash: str) -> None:
        """Insert the key's public record with the hash of its secret."""
        with self._sessions.begin() as session:
            session.add(
                ApiKeyRow(
                    key_id=key.key_id,
                    secret_hash=secret_hash,
                    owner=key.owner,
                    role=key.role.value,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret hash, revoked or not; None for an unknown id."""
        with self._sessions() as session:
            row = session.get(ApiKeyRow, key_id)
            return (_to_key(row), row.secret_hash) if row else None

    def list_keys(self) -> Sequence[ApiKey]:
        """Every key, revoked or not, by owner then creation time."""
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.owner, ApiKeyRow.created_at)
        with self._sessions() as session:
            return [_to_key(row) for row in session.scalars(stmt)]

    def revoke(self, key_id: str, *, now: datetime) -> ApiKey | None:
        """Revoke an active key; None when no active key has this id."""
        t = ApiKeyRow
        stmt = (
            update(t)
            .where(t.key_id == key_id, t.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(t)
        )
        with self._sessions.begin() as session:
            row = session.scalars(stmt).first()
            return _to_key(row) if row else None


def _to_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        owner=row.owner,
        role=Role(row.role),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
