"""API keys: issue, check, list and revoke them.

A key reads ``rk_<key_id>_<secret>``. The ledger keeps the key id in clear (to find the
record) and the SHA-256 of the whole key; keys are 256-bit random, so a fast hash is
enough, and the comparison runs in constant time.

An :class:`ApiKeyCache` remembers, for a few seconds, the keys that authenticated: by key
id, the stored hash and the caller, never the key itself. A cached key is checked without
the ledger (the same constant-time comparison against the same hash); a revocation
therefore takes effect within the cache's TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from app.domain.auth import ApiKey, ApiKeyRepository, Principal, Role
from app.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

_PREFIX = "rk_"
_UNKNOWN_HASH = hashlib.sha256(b"no such key").hexdigest()


def hash_key(key: str) -> str:
    """The SHA-256 (hex) of the whole key: what the ledger stores and compares."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    repo: ApiKeyRepository, *, owner: str, role: Role, now: datetime
) -> tuple[ApiKey, str]:
    """A new key for ``owner``; returns its record and the key itself (shown once).

    Raises:
        InvalidInput: ``INVALID_OWNER``: ``owner`` is blank or longer than 128 characters.
    """
    owner = owner.strip()
    if not owner or len(owner) > 128:
        raise InvalidInput("owner must be 1 to 128 characters.", code="INVALID_OWNER")
    key_id = secrets.token_hex(6)
    plain = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(key_id=key_id, owner=owner, role=role, created_at=now)
    repo.add(record, hash_key(plain))
    return record, plain


def authenticate(
    repo: ApiKeyRepository, presented: str | None, *, cache: ApiKeyCache | None = None
) -> Principal:
    """The caller a presented key stands for; with a ``cache``, the ledger only on a miss.

    Raises:
        Unauthenticated: no key, a malformed, unknown or revoked one (one message for all).
    """
    if cache is not None:
        cached = cache.lookup(presented)
        if cached is not None:
            return cached
    if not presented:
        raise _missing()
    key_id = _key_id(presented)
    found = repo.find(key_id) if key_id else None
    expected = found[1] if found else _UNKNOWN_HASH
    matches = hmac.compare_digest(hash_key(presented), expected)
    if found is None or not matches or not found[0].active:
        raise _refused()
    record = found[0]
    principal = Principal(owner=record.owner, role=record.role, key_id=record.key_id)
    if cache is not None:
        cache.remember(principal, expected)
    return principal


class ApiKeyCache:
    """Keys that authenticated lately, by key id: their stored hash and their caller.

    Thread-safe and bounded (least recently used entries go first). Only active keys that
    matched are remembered, and only their hash: the key itself is never kept. A key whose
    id is cached but whose hash differs is refused at once (a key's hash never changes);
    an unknown id is left to the ledger.

    Args:
        ttl: Seconds an entry is trusted; revocations take effect within it. 0 disables.
        size: Most entries kept.
        clock: Monotonic clock (injected by tests).
    """

    def __init__(
        self, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl < 0 or size < 1:
            raise ValueError("ttl must be >= 0 and size >= 1")
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, presented: str | None) -> Principal | None:
        """The cached caller of ``presented``; None when the ledger must answer.

        Raises:
            Unauthenticated: no key, a malformed one, or one whose id is cached but whose
                hash does not match (all decided without the ledger).
        """
        if not presented:
            raise _missing()
        key_id = _key_id(presented)
        if key_id is None:
            raise _refused()
        if self.ttl == 0:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                return None
            if entry[2] <= now:
                del self._entries[key_id]
                return None
            self._entries.move_to_end(key_id)
        stored_hash, principal, _ = entry
        if not hmac.compare_digest(hash_key(presented), stored_hash):
            raise _refused()
        return principal

    def remember(self, principal: Principal, stored_hash: str) -> None:
        """Trust ``principal`` (whose key hashes to ``stored_hash``) for ``ttl`` seconds."""
        if self.ttl == 0:
            return
        expires = self._clock() + self.ttl
        with self._lock:
            self._entries[principal.key_id] = (stored_hash, principal, expires)
            self._entries.move_to_end(principal.key_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def require_operator(principal: Principal) -> Principal:
    """``principal``, if it is an operator's.

    Raises:
        Forbidden: a submitter's key.
    """
    if not principal.sees_all:
        raise Forbidden("This route is for operator keys; a submitter key cannot use it.")
    return principal


def revoke_api_key(repo: ApiKeyRepository, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke the active key ``key_id``; returns its record.

    A cached key still authenticates until its cache entry expires (the cache's TTL).

    Raises:
        NotFound: ``API_KEY_NOT_FOUND``: no active key has this id.
    """
    revoked = repo.revoke(key_id, now=now)
    if revoked is None:
        raise NotFound(f"No active API key with id {key_id}.", code="API_KEY_NOT_FOUND")
    return revoked


def _missing() -> Unauthenticated:
    return Unauthenticated("This route needs an API key in the X-API-Key header.")


def _refused() -> Unauthenticated:
    return Unauthenticated("The API key is unknown or revoked.", code="INVALID_API_KEY")


def _key_id(presented: str) -> str | None:
    if not presented.startswith(_PREFIX):
        return None
    key_id, sep, secret = presented[len(_PREFIX) :].partition("_")
    return key_id if sep and secret and len(key_id) <= 32 else None
