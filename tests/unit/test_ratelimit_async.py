"""``RateLimiter.hit_async``: the same outage bookkeeping as ``hit``, from the event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from app.api.ratelimit import RECHECK_SECONDS, RateLimiter
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.unit.test_ratelimit import Clock


class FlakyAsyncScript:
    """Stands in for the async Redis script: fails while ``down``, else allows every hit."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def __call__(self, **_: Any) -> list[object]:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("connection refused")
        return [1, b"0"]


def test_an_outage_falls_back_and_rechecks_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = RateLimiter(capacity=3, window=60.0, redis_url="redis://127.0.0.1:1/0", clock=clock)
    script = FlakyAsyncScript()
    limiter._async_script = script  # type: ignore[assignment]

    async def scenario() -> None:
        answers = [await limiter.hit_async("k") for _ in range(4)]
        assert answers[:3] == [None] * 3
        assert answers[3] is not None, "the local bucket enforces the limit"
        assert script.calls == 1, "no Redis call until the re-check is due"
        clock.advance(RECHECK_SECONDS)
        await limiter.hit_async("k")
        assert script.calls == 2
        script.down = False
        clock.advance(RECHECK_SECONDS)
        assert await limiter.hit_async("k") is None, "Redis answers again: its bucket decides"
        assert limiter.shared
        await limiter.aclose()

    with caplog.at_level(logging.INFO, logger="app.api.ratelimit"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["ratelimit.redis.unavailable"]
    assert "ratelimit.redis.recovered" in [r.getMessage() for r in caplog.records]


def test_without_redis_the_async_path_uses_the_local_buckets() -> None:
    limiter = RateLimiter(capacity=2, window=10.0, redis_url=None, clock=Clock())

    async def hits() -> list[float | None]:
        return [await limiter.hit_async("k") for _ in range(3)]

    answers = asyncio.run(hits())
    assert answers[:2] == [None, None]
    assert answers[2] == pytest.approx(5.0)
    asyncio.run(limiter.aclose())  # nothing to close: no error
