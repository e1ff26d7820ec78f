"""Who is calling: API keys, their owner and role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


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
