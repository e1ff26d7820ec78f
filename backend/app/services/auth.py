"""API keys: issue, check, list and revoke them.

A key reads ``rk_<key_id>_<secret>``. The ledger keeps the key id in clear (to find the
record) and the SHA-256 of the whole key; keys are 256-bit random, so a fast hash is
enough, and the comparison runs in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from app.domain.auth import ApiKey, Principal, Role
from app.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from app.domain.ports import ApiKeyRepository

_PREFIX = "rk_"
_UNKNOWN_HASH = hashlib.sha256(b"no such key").hexdigest()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    repo: ApiKeyRepository, *, owner: str, role: Role, now: datetime
) -> tuple[ApiKey, str]:
    """A new key for ``owner``; returns its record and the key itself (shown once)."""
    owner = owner.strip()
    if not owner or len(owner) > 128:
        raise InvalidInput("owner must be 1 to 128 characters.", code="INVALID_OWNER")
    key_id = secrets.token_hex(6)
    plain = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(key_id=key_id, owner=owner, role=role, created_at=now)
    repo.add(record, hash_key(plain))
    return record, plain


def authenticate(repo: ApiKeyRepository, presented: str | None) -> Principal:
    """The caller a presented key stands for.

    Raises:
        Unauthenticated: no key, a malformed, unknown or revoked one (one message for all).
    """
    if not presented:
        raise Unauthenticated("This route needs an API key in the X-API-Key header.")
    key_id = _key_id(presented)
    found = repo.find(key_id) if key_id else None
    expected = found[1] if found else _UNKNOWN_HASH
    matches = hmac.compare_digest(hash_key(presented), expected)
    if found is None or not matches or not found[0].active:
        raise Unauthenticated("The API key is unknown or revoked.", code="INVALID_API_KEY")
    record = found[0]
    return Principal(owner=record.owner, role=record.role, key_id=record.key_id)


def require_operator(principal: Principal) -> Principal:
    if not principal.sees_all:
        raise Forbidden("This route is for operator keys; a submitter key cannot use it.")
    return principal


def revoke_api_key(repo: ApiKeyRepository, key_id: str, *, now: datetime) -> ApiKey:
    revoked = repo.revoke(key_id, now=now)
    if revoked is None:
        raise NotFound(f"No active API key with id {key_id}.", code="API_KEY_NOT_FOUND")
    return revoked


def _key_id(presented: str) -> str | None:
    if not presented.startswith(_PREFIX):
        return None
    key_id, sep, secret = presented[len(_PREFIX) :].partition("_")
    return key_id if sep and secret and len(key_id) <= 32 else None
