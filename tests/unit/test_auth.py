"""API keys and Idempotency-Key, through in-memory adapters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from app.core.config import Settings
from app.domain.auth import ApiKey, Role
from app.domain.errors import (
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from app.domain.jobs import utcnow
from app.domain.queues import ReportType
from app.services.auth import authenticate, create_api_key, require_operator, revoke_api_key
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from pydantic import ValidationError

from tests.unit.fakes import (
    MemoryRepository,
    RecordingDispatcher,
    memory_deps,
)


class MemoryKeys:
    def __init__(self) -> None:
        self.keys: dict[str, tuple[ApiKey, str]] = {}

    def add(self, key: ApiKey, secret_hash: str) -> None:
        self.keys[key.key_id] = (key, secret_hash)

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        return self.keys.get(key_id)

    def list_keys(self) -> Sequence[ApiKey]:
        return [k for k, _ in self.keys.values()]

    def revoke(self, key_id: str, *, now: datetime) -> ApiKey | None:
        found = self.keys.get(key_id)
        if found is None or not found[0].active:
            return None
        revoked = replace(found[0], revoked_at=now)
        self.keys[key_id] = (revoked, found[1])
        return revoked


def test_a_created_key_authenticates_as_its_owner_and_role() -> None:
    keys = MemoryKeys()
    record, plain = create_api_key(keys, owner=" alice ", role=Role.SUBMITTER, now=utcnow())
    caller = authenticate(keys, plain)
    assert (caller.owner, caller.role, caller.key_id) == ("alice", Role.SUBMITTER, record.key_id)
    assert caller.scope == "alice"
    assert plain not in repr(keys.keys)  # only the hash is kept


@pytest.mark.parametrize("presented", [None, "", "rk_", "rk_abc", "abc_def", "rk_nope_secret"])
def test_missing_or_malformed_or_unknown_keys_are_refused(presented: str | None) -> None:
    keys = MemoryKeys()
    create_api_key(keys, owner="alice", role=Role.OPERATOR, now=utcnow())
    with pytest.raises(Unauthenticated):
        authenticate(keys, presented)


def test_a_key_with_the_right_id_but_wrong_secret_is_refused() -> None:
    keys = MemoryKeys()
    _record, plain = create_api_key(keys, owner="alice", role=Role.OPERATOR, now=utcnow())
    with pytest.raises(Unauthenticated):
        authenticate(keys, plain[:-1] + ("A" if plain[-1] != "A" else "B"))


def test_a_revoked_key_is_refused_and_cannot_be_revoked_twice() -> None:
    keys = MemoryKeys()
    record, plain = create_api_key(keys, owner="bob", role=Role.SUBMITTER, now=utcnow())
    revoke_api_key(keys, record.key_id, now=utcnow())
    with pytest.raises(Unauthenticated):
        authenticate(keys, plain)
    with pytest.raises(NotFound):
        revoke_api_key(keys, record.key_id, now=utcnow())


def test_only_operators_pass_the_operator_check() -> None:
    keys = MemoryKeys()
    _, operator = create_api_key(keys, owner="ops", role=Role.OPERATOR, now=utcnow())
    _, submitter = create_api_key(keys, owner="bob", role=Role.SUBMITTER, now=utcnow())
    assert require_operator(authenticate(keys, operator)).scope is None
    with pytest.raises(Forbidden):
        require_operator(authenticate(keys, submitter))


def test_an_owner_must_be_named() -> None:
    with pytest.raises(InvalidInput):
        create_api_key(MemoryKeys(), owner="  ", role=Role.OPERATOR, now=utcnow())


def test_auth_can_be_off_only_in_development() -> None:
    assert Settings(environment="development").auth_required is False
    assert Settings(environment="test").auth_required is True
    assert Settings(environment="development", auth_enabled=True).auth_required is True
    with pytest.raises(ValidationError, match="only with ENVIRONMENT=development"):
        Settings(environment="production", auth_enabled=False)


@pytest.fixture
def deps(tmp_path: Path) -> Deps:
    return memory_deps(tmp_path / "artifacts")


def submit(deps: Deps, owner: str, key: str | None, **params: object) -> tuple[str, bool]:
    result = enqueue_report(
        deps=deps, report_type=ReportType.PDF, params=params, owner=owner, idempotency_key=key
    )
    return str(result.job.id), result.created


def test_the_same_key_and_request_returns_the_first_job_and_dispatches_once(deps: Deps) -> None:
    first, created = submit(deps, "alice", "k1", pages=2)
    again, replayed = submit(deps, "alice", "k1", pages=2.0)  # the same once validated
    assert (again, created, replayed) == (first, True, False)
    assert isinstance(deps.dispatcher, RecordingDispatcher)
    assert len(deps.dispatcher.dispatched) == 1


def test_the_same_key_with_another_request_is_a_conflict_and_writes_nothing(deps: Deps) -> None:
    submit(deps, "alice", "k1", pages=2)
    assert isinstance(deps.repo, MemoryRepository)
    before = dict(deps.repo.jobs)
    with pytest.raises(IdempotencyConflict):
        submit(deps, "alice", "k1", pages=3)
    assert deps.repo.jobs == before


def test_keys_belong_to_their_owner_and_no_key_means_a_new_job(deps: Deps) -> None:
    alice, _ = submit(deps, "alice", "k1", pages=2)
    bob, created = submit(deps, "bob", "k1", pages=2)
    assert created
    assert bob != alice
    assert submit(deps, "alice", None, pages=2)[0] != submit(deps, "alice", None, pages=2)[0]


def test_a_first_call_losing_the_insert_race_returns_the_winner(deps: Deps) -> None:
    """The unique index settles it: the loser sees IdempotencyKeyTaken and replays."""
    assert isinstance(deps.repo, MemoryRepository)
    repo = deps.repo
    winner: list[str] = []
    real_find = repo.find_idempotent
    calls = 0

    def find_after_the_winner(owner: str | None, key: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:  # the loser's first look: nothing yet; then the winner commits
            winner.append(submit(deps, owner or "", key, pages=2)[0])
            return None
        return real_find(owner, key)

    repo.find_idempotent = find_after_the_winner  # type: ignore[method-assign]
    loser, created = submit(deps, "alice", "race", pages=2)
    assert (loser, created) == (winner[0], False)
