"""Console sessions on in-memory adapters: sign-in, idle timeout, revoked keys, CSRF."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from app.domain.auth import Role
from app.domain.console import ConsoleSession
from app.domain.errors import Forbidden, Unauthenticated
from app.services.auth import create_api_key, revoke_api_key
from app.services.console import (
    IDLE_TIMEOUT,
    check_csrf,
    resolve_session,
    sign_in,
    sign_out,
)

from tests.unit.test_auth import MemoryKeys

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


class MemorySessions:
    """The session half of :class:`~app.domain.console.ConsoleRepository`, beside ``keys``."""

    def __init__(self, keys: MemoryKeys) -> None:
        self.keys = keys
        self.rows: dict[str, ConsoleSession] = {}

    def add_session(self, session: ConsoleSession) -> None:
        self.rows[session.token_hash] = session

    def find_session(self, token_hash: str) -> tuple[ConsoleSession, bool] | None:
        session = self.rows.get(token_hash)
        if session is None:
            return None
        key = self.keys.find(session.key_id)
        return session, key is not None and key[0].active

    def touch_session(self, token_hash: str, *, now: datetime) -> None:
        self.rows[token_hash] = replace(self.rows[token_hash], last_seen=now)

    def delete_session(self, token_hash: str) -> None:
        self.rows.pop(token_hash, None)

    def delete_idle_sessions(self, before: datetime) -> int:
        idle = [h for h, s in self.rows.items() if s.last_seen < before]
        for token_hash in idle:
            del self.rows[token_hash]
        return len(idle)


def signed_in() -> tuple[MemorySessions, str, str]:
    keys = MemoryKeys()
    sessions = MemorySessions(keys)
    record, plain = create_api_key(keys, owner="ops", role=Role.OPERATOR, now=T0)
    token, _ = sign_in(keys=keys, console=sessions, presented=plain, now=T0, keys_required=True)  # type: ignore[arg-type]
    return sessions, token, record.key_id


def resolve(sessions: MemorySessions, token: str, now: datetime) -> ConsoleSession:
    return resolve_session(console=sessions, token=token, now=now, keys_required=True)  # type: ignore[arg-type]


def test_only_the_token_hash_is_stored_and_activity_keeps_the_session() -> None:
    sessions, token, _ = signed_in()
    assert token not in sessions.rows
    assert all(token not in str(s) for s in sessions.rows.values())
    now = T0
    for _ in range(4):  # a request every 20 min: never idle for 30
        now += IDLE_TIMEOUT - timedelta(minutes=10)
        assert resolve(sessions, token, now).owner == "ops"


def test_an_idle_session_is_signed_out() -> None:
    sessions, token, _ = signed_in()
    with pytest.raises(Unauthenticated):
        resolve(sessions, token, T0 + IDLE_TIMEOUT + timedelta(seconds=1))
    assert sessions.rows == {}
    with pytest.raises(Unauthenticated):  # and stays out
        resolve(sessions, token, T0)


def test_a_revoked_key_ends_its_sessions_and_signing_out_too() -> None:
    sessions, token, key_id = signed_in()
    revoke_api_key(sessions.keys, key_id, now=T0)
    with pytest.raises(Unauthenticated):
        resolve(sessions, token, T0 + timedelta(seconds=1))
    sessions, token, _ = signed_in()
    sign_out(console=sessions, token=token)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        resolve(sessions, token, T0)


def test_bad_keys_get_no_session_and_forms_need_the_csrf_token() -> None:
    keys = MemoryKeys()
    sessions = MemorySessions(keys)
    for presented in (None, "", "rk_0_nope"):
        with pytest.raises(Unauthenticated):
            sign_in(keys=keys, console=sessions, presented=presented, now=T0, keys_required=True)  # type: ignore[arg-type]
    assert sessions.rows == {}
    sessions, token, _ = signed_in()
    session = resolve(sessions, token, T0)
    check_csrf(session, session.csrf)
    for forged in (None, "", session.csrf[:-1] + "x"):
        with pytest.raises(Forbidden):
            check_csrf(session, forged)


def test_the_idle_timeout_is_the_setting() -> None:
    """CONSOLE_IDLE_MINUTES reaches the session check through the web layer."""
    from app.api.console_web import idle_timeout
    from app.bootstrap import Container
    from app.core.config import Settings

    settings = Settings(_env_file=None, console_idle_minutes=5)  # type: ignore[call-arg]
    idle = idle_timeout(Container(settings=settings, engine=None, deps=None, inline=None))  # type: ignore[arg-type]
    assert idle == timedelta(minutes=5)
    sessions, token, _ = signed_in()
    check = {"console": sessions, "token": token, "keys_required": True}
    assert resolve_session(now=T0 + timedelta(minutes=4), idle=idle, **check).owner == "ops"  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        resolve_session(now=T0 + timedelta(minutes=10), idle=idle, **check)  # type: ignore[arg-type]
