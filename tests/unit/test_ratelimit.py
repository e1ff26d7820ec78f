"""The in-process token bucket (injected clock) and the Redis outage bookkeeping."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from app.api.ratelimit import RECHECK_SECONDS, RateLimiter
from app.bootstrap import Container
from app.core.config import Settings
from redis.exceptions import ConnectionError as RedisConnectionError


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def local(clock: Clock, capacity: int = 100, window: float = 60.0) -> RateLimiter:
    return RateLimiter(capacity=capacity, window=window, redis_url=None, clock=clock)


def test_a_burst_of_capacity_passes_and_the_next_waits_for_one_token() -> None:
    limiter = local(Clock())
    assert [limiter.hit("owner") for _ in range(100)] == [None] * 100
    retry_after = limiter.hit("owner")
    assert retry_after == pytest.approx(60.0 / 100)
    assert limiter.hit("owner") == pytest.approx(0.6), "a refused hit takes no token"
    assert not limiter.shared


def test_tokens_come_back_over_time_up_to_capacity() -> None:
    clock = Clock()
    limiter = local(clock, capacity=10, window=10.0)  # one token per second
    for _ in range(10):
        assert limiter.hit("k") is None
    assert limiter.hit("k") == pytest.approx(1.0)
    clock.advance(0.25)
    assert limiter.hit("k") == pytest.approx(0.75)
    clock.advance(0.75)
    assert limiter.hit("k") is None
    assert limiter.hit("k") == pytest.approx(1.0)
    clock.advance(3.0)
    assert [limiter.hit("k") for _ in range(3)] == [None] * 3
    assert limiter.hit("k") is not None
    clock.advance(1000.0)  # a long pause refills to capacity, not beyond
    assert [limiter.hit("k") for _ in range(10)] == [None] * 10
    assert limiter.hit("k") is not None


def test_keys_have_their_own_buckets() -> None:
    limiter = local(Clock(), capacity=3)
    for _ in range(3):
        assert limiter.hit("alice") is None
    assert limiter.hit("alice") is not None
    assert [limiter.hit("bob") for _ in range(3)] == [None] * 3
    assert limiter.hit("bob") is not None


def test_idle_buckets_are_forgotten_without_changing_the_answers() -> None:
    clock = Clock()
    limiter = local(clock, capacity=2, window=1.0)
    for i in range(50):
        limiter.hit(f"k{i}")
    clock.advance(1.0)
    limiter.hit("other")
    assert len(limiter._local._buckets) == 1
    assert [limiter.hit("k0"), limiter.hit("k0")] == [None, None]
    assert limiter.hit("k0") is not None


def test_concurrent_hits_never_take_more_than_capacity() -> None:
    limiter = local(Clock(), capacity=500)
    allowed = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            if limiter.hit("shared") is None:
                with lock:
                    allowed.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 500


def test_the_container_builds_it_from_the_rate_limit_settings() -> None:
    settings = Settings(rate_limit_requests=7, rate_limit_window=14.0, redis_url="")
    limiter = Container(settings=settings, engine=None, deps=None, inline=None).rate_limiter  # type: ignore[arg-type]
    assert (limiter.capacity, limiter.window, limiter.shared) == (7, 14.0, False)
    assert [limiter.hit("k") for _ in range(7)] == [None] * 7
    assert limiter.hit("k") == pytest.approx(2.0, abs=0.01)
    limiter.close()


def test_invalid_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RateLimiter(capacity=0, window=1.0, redis_url=None)


class FlakyScript:
    """Stands in for the Redis script: fails while ``down``, else allows every hit."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def __call__(self, **_: Any) -> list[object]:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("connection refused")
        return [1, b"0"]


def test_an_outage_falls_back_logs_once_and_rechecks_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    # Nothing connects at construction: the script is replaced before any call.
    limiter = RateLimiter(capacity=3, window=60.0, redis_url="redis://127.0.0.1:1/0", clock=clock)
    script = FlakyScript()
    limiter._script = script  # type: ignore[assignment]
    assert limiter.shared
    with caplog.at_level(logging.INFO, logger="app.api.ratelimit"):
        answers = [limiter.hit("k") for _ in range(4)]
        assert answers[:3] == [None] * 3
        assert answers[3] is not None, "the local bucket enforces the limit"
        assert not limiter.shared
        assert script.calls == 1, "no Redis call until the re-check is due"
        clock.advance(RECHECK_SECONDS)
        limiter.hit("k")
        limiter.hit("k")
        assert script.calls == 2, "one probe per re-check interval"
        script.down = False
        clock.advance(RECHECK_SECONDS)
        assert limiter.hit("k") is None, "Redis answers again: its bucket decides"
        assert limiter.shared
        assert script.calls == 3
        limiter.hit("k")
        assert script.calls == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["ratelimit.redis.unavailable"]
    assert "ratelimit.redis.recovered" in [r.getMessage() for r in caplog.records]
    limiter.close()
