"""The API-key cache: a short TTL, revocation within it, never the key itself."""

from __future__ import annotations

import pytest
from app.core.config import Settings
from app.domain.auth import Role
from app.domain.errors import Unauthenticated
from app.domain.jobs import utcnow
from app.services.auth import ApiKeyCache, authenticate, create_api_key, revoke_api_key

from tests.unit.test_auth import MemoryKeys


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingKeys(MemoryKeys):
    """MemoryKeys that count the ledger look-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.finds = 0

    def find(self, key_id: str):  # type: ignore[no-untyped-def]
        self.finds += 1
        return super().find(key_id)


def test_a_cached_key_is_checked_without_the_ledger() -> None:
    keys, clock = CountingKeys(), Clock()
    cache = ApiKeyCache(5.0, clock=clock)
    record, plain = create_api_key(keys, owner="alice", role=Role.SUBMITTER, now=utcnow())
    first = authenticate(keys, plain, cache=cache)
    again = [authenticate(keys, plain, cache=cache) for _ in range(10)]
    assert keys.finds == 1
    assert all(p == first for p in again)
    assert (first.owner, first.role, first.key_id) == ("alice", Role.SUBMITTER, record.key_id)
    clock.now += 5.0  # the entry expired: the ledger is asked again
    authenticate(keys, plain, cache=cache)
    assert keys.finds == 2


def test_a_revocation_takes_effect_within_the_ttl() -> None:
    keys, clock = CountingKeys(), Clock()
    cache = ApiKeyCache(5.0, clock=clock)
    record, plain = create_api_key(keys, owner="bob", role=Role.SUBMITTER, now=utcnow())
    authenticate(keys, plain, cache=cache)
    revoke_api_key(keys, record.key_id, now=utcnow())
    clock.now += 4.9
    assert authenticate(keys, plain, cache=cache).owner == "bob", "trusted until the TTL ends"
    clock.now += 0.1
    with pytest.raises(Unauthenticated) as refused:
        authenticate(keys, plain, cache=cache)
    assert refused.value.code == "INVALID_API_KEY"
    with pytest.raises(Unauthenticated):  # and a refused key is not remembered
        authenticate(keys, plain, cache=cache)
    assert len(cache) == 0


def test_a_wrong_secret_is_refused_even_when_the_id_is_cached() -> None:
    keys, clock = CountingKeys(), Clock()
    cache = ApiKeyCache(60.0, clock=clock)
    _, plain = create_api_key(keys, owner="alice", role=Role.OPERATOR, now=utcnow())
    authenticate(keys, plain, cache=cache)
    forged = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    for presented in (forged, plain + "x", plain.rsplit("_", 1)[0] + "_short"):
        with pytest.raises(Unauthenticated) as refused:
            authenticate(keys, presented, cache=cache)
        assert refused.value.code == "INVALID_API_KEY"
    assert keys.finds == 1, "a cached id's hash decides without the ledger"
    assert authenticate(keys, plain, cache=cache).owner == "alice", "the real key still works"


@pytest.mark.parametrize(
    ("presented", "code"),
    [(None, "UNAUTHORIZED"), ("", "UNAUTHORIZED"), ("abc", "INVALID_API_KEY")],
)
def test_missing_or_malformed_keys_never_reach_the_ledger(presented: str | None, code: str) -> None:
    keys = CountingKeys()
    with pytest.raises(Unauthenticated) as refused:
        authenticate(keys, presented, cache=ApiKeyCache(5.0))
    assert refused.value.code == code
    assert keys.finds == 0


def test_an_unknown_key_is_asked_of_the_ledger_every_time() -> None:
    keys = CountingKeys()
    cache = ApiKeyCache(5.0)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            authenticate(keys, "rk_000000000000_nope", cache=cache)
    assert keys.finds == 3
    assert len(cache) == 0


def test_the_cache_keeps_hashes_not_keys_and_stays_bounded() -> None:
    keys, clock = MemoryKeys(), Clock()
    cache = ApiKeyCache(60.0, size=3, clock=clock)
    plains = [
        create_api_key(keys, owner=f"o{i}", role=Role.SUBMITTER, now=utcnow())[1] for i in range(5)
    ]
    for plain in plains:
        authenticate(keys, plain, cache=cache)
    assert len(cache) == 3
    stored = repr(cache._entries)
    assert not any(plain in stored for plain in plains)
    # rk_<key id>_<secret>: the secret is urlsafe base64, which may hold "_" itself
    secrets_of = [plain.split("_", 2)[2] for plain in plains]
    assert not any(secret in stored for secret in secrets_of), "no secret part"
    authenticate(keys, plains[2], cache=cache)  # most recently used: kept
    authenticate(keys, plains[0], cache=cache)  # back in, evicting the least recent
    assert set(cache._entries) == {p.split("_")[1] for p in (plains[4], plains[2], plains[0])}


def test_a_zero_ttl_caches_nothing() -> None:
    keys = CountingKeys()
    cache = ApiKeyCache(0.0)
    _, plain = create_api_key(keys, owner="alice", role=Role.SUBMITTER, now=utcnow())
    for _ in range(3):
        authenticate(keys, plain, cache=cache)
    assert keys.finds == 3
    assert len(cache) == 0


def test_invalid_cache_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        ApiKeyCache(-1.0)
    with pytest.raises(ValueError, match="size"):
        ApiKeyCache(1.0, size=0)


def test_the_ttl_defaults_to_five_seconds_in_production_only() -> None:
    assert Settings(environment="production").auth_cache_ttl == 5.0
    assert Settings(environment="test").auth_cache_ttl == 0.0
    assert Settings(environment="development").auth_cache_ttl == 0.0
    assert Settings(environment="test", auth_cache_seconds=2.5).auth_cache_ttl == 2.5
    assert Settings(environment="production", auth_cache_seconds=0).auth_cache_ttl == 0.0
