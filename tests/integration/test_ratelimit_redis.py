"""The rate limiter against the real Redis: one budget for every replica, safe fallback."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from app.api.ratelimit import RateLimiter

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        conn.ping()
    except redis.RedisError as exc:  # never skip silently: say how to get it
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}).")
    yield conn
    conn.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    value = f"test-ratelimit-{secrets.token_hex(4)}:"
    yield value
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_two_replicas_share_one_budget(prefix: str) -> None:
    # Clocks far apart: the buckets run on the Redis server's time, not the replicas'.
    # An hour's window: one token in 36 s, so no token refills while the 100 calls run,
    # however slow the machine.
    a = RateLimiter(
        capacity=100, window=3600.0, redis_url=REDIS_URL, prefix=prefix, clock=lambda: 0.0
    )
    b = RateLimiter(
        capacity=100, window=3600.0, redis_url=REDIS_URL, prefix=prefix, clock=lambda: 1e9
    )
    try:
        answers = [(a if i % 2 else b).hit("owner-1") for i in range(100)]
        assert answers == [None] * 100
        for limiter in (a, b):
            retry_after = limiter.hit("owner-1")
            assert retry_after is not None
            assert 0 < retry_after <= 36 + 1e-6
        assert a.shared
        assert b.shared
        assert a.hit("owner-2") is None, "another key has its own budget"
    finally:
        a.close()
        b.close()


def test_bucket_key_has_a_ttl_and_refills_on_server_time(client: redis.Redis, prefix: str) -> None:
    # One token a second: the third hit finds none unless the first two took a second.
    limiter = RateLimiter(capacity=2, window=2.0, redis_url=REDIS_URL, prefix=prefix)
    try:
        assert [limiter.hit("k"), limiter.hit("k")] == [None, None]
        retry_after = limiter.hit("k")
        assert retry_after is not None
        assert 0 < retry_after <= 1.0 + 1e-6
        ttl_ms = client.pttl(f"{prefix}k")
        assert 0 < ttl_ms <= 2000 + 1000
        assert set(client.hkeys(f"{prefix}k")) == {b"tokens", b"s", b"us"}
        time.sleep(retry_after + 0.02)
        assert limiter.hit("k") is None
    finally:
        limiter.close()


def test_long_window_ttl(client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(capacity=100, window=60.0, redis_url=REDIS_URL, prefix=prefix)
    try:
        limiter.hit("k")
        assert 59_000 < client.pttl(f"{prefix}k") <= 61_000
    finally:
        limiter.close()


def test_unreachable_redis_falls_back_to_the_process_and_still_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(capacity=5, window=60.0, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with caplog.at_level(logging.WARNING, logger="app.api.ratelimit"):
            started = time.perf_counter()
            answers = [limiter.hit("owner") for _ in range(20)]
            elapsed = time.perf_counter() - started
        assert answers[:5] == [None] * 5
        assert all(a is not None and a == pytest.approx(12.0, abs=0.1) for a in answers[5:])
        assert not limiter.shared
        assert elapsed < 2.0, "a dead Redis must cost little"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["ratelimit.redis.unavailable"], "one warning per outage"
    finally:
        limiter.close()
