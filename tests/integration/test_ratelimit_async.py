"""The API's rate-limit path (``hit_async``) against the real Redis: one round trip a hit."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from app.api.ratelimit import RateLimiter

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # never skip silently: say how to get it
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}).")
    value = f"test-ratelimit-async-{secrets.token_hex(4)}:"
    yield value
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_async_and_sync_hits_share_one_bucket(prefix: str) -> None:
    limiter = RateLimiter(capacity=10, window=60.0, redis_url=REDIS_URL, prefix=prefix)

    async def hits() -> list[float | None]:
        try:
            return [await limiter.hit_async("owner") for _ in range(6)]
        finally:
            await limiter.aclose()

    synced = [limiter.hit("owner") for _ in range(5)]
    answers = asyncio.run(hits())
    assert synced == [None] * 5
    assert answers[:5] == [None] * 5
    assert answers[5] is not None
    assert 0 < answers[5] <= 6.0 + 1e-6
    assert limiter.shared


def test_a_hit_is_one_evalsha_round_trip(prefix: str) -> None:
    limiter = RateLimiter(capacity=1000, window=60.0, redis_url=REDIS_URL, prefix=prefix)
    client = limiter._async_redis
    assert client is not None
    sent: list[str] = []
    real = client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await real(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]

    async def hits() -> None:
        try:
            await limiter.hit_async("k")  # connects; loads the script if Redis lacks it
            sent.clear()
            for _ in range(20):
                assert await limiter.hit_async("k") is None
        finally:
            await limiter.aclose()

    asyncio.run(hits())
    assert sent == ["EVALSHA"] * 20


def test_an_unreachable_redis_costs_little_and_still_limits() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = RateLimiter(capacity=3, window=60.0, redis_url=f"redis://127.0.0.1:{port}/0")

    async def hits() -> list[float | None]:
        try:
            return [await limiter.hit_async("owner") for _ in range(10)]
        finally:
            await limiter.aclose()

    started = time.perf_counter()
    answers = asyncio.run(hits())
    assert time.perf_counter() - started < 2.0
    assert answers[:3] == [None] * 3
    assert all(a == pytest.approx(20.0, abs=0.1) for a in answers[3:])
    assert not limiter.shared
