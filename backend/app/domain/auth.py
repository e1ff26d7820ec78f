"""Who is calling: API keys, their owner and role."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """``submitter`` sees and cancels its own jobs; ``operator`` sees everything."""

    SUBMITTER = "submitter"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public record; the secret itself is never stored, only its hash."""

    key_id: str
    owner: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    owner: str
    role: Role
    key_id: str

    @property
    def sees_all(self) -> bool:
        """Whether the caller is an operator, who sees every owner's jobs."""
        return self.role is Role.OPERATOR

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this caller may see; ``None``: every owner's."""
        return None if self.sees_all else self.owner


class ApiKeyRepository(Protocol):
    """API keys: public records plus the SHA-256 of each secret."""

    def add(self, key: ApiKey, secret_hash: str) -> None:
        """Store a new key with the SHA-256 of its secret (never the secret itself)."""
        ...

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret hash, revoked or not."""
        ...

    def list_keys(self) -> Sequence[ApiKey]:
        """Every key, revoked or not."""
        ...

    def revoke(self, key_id: str, *, now: datetime) -> ApiKey | None:
        """Revoke an active key; ``None`` when no active key has this id."""
        ...
