"""Token-bucket rate limiting per key, shared by every API replica through Redis.

Each key owns a bucket of ``capacity`` tokens that refills at ``capacity / window`` tokens
per second; a request takes one token or is refused with the time until the next one.

With Redis the bucket lives in a hash (``tokens`` and the server time of the last update)
that one Lua script reads and updates atomically, timed by the Redis server's own clock so
replicas agree whatever their clocks say; the hash expires once a full bucket would have
refilled. Without Redis, or while it does not answer, each process keeps its own buckets
(the budget is then per replica): a Redis failure never fails a request, it is logged once
per outage and Redis is tried again every few seconds.

A hit is one round trip: ``EVALSHA`` of the script (loaded once, on the first
``NOSCRIPT``). The API calls :meth:`RateLimiter.hit_async`, which makes that round trip
from the event loop (redis-py's asyncio client, replies parsed by hiredis) rather than
from a thread-pool thread; :meth:`RateLimiter.hit` is the same for synchronous callers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from app.core.settings.operations import SecuritySettings
from app.core.settings.runtime import BrokerSettings

log = logging.getLogger(__name__)

#: Seconds a Redis call may take before the hit falls back to the local bucket.
REDIS_TIMEOUT = 0.2
#: Seconds between two attempts to use Redis again during an outage.
RECHECK_SECONDS = 5.0

# KEYS[1]: the bucket; ARGV: capacity, refill rate (tokens/s), TTL (ms).
# Returns {1, "0"} when a token was taken, else {0, seconds until one is available}.
# The time is kept as TIME's own seconds and microseconds strings: exact, whatever Lua's
# number formatting would make of a 16-digit timestamp.
_HIT_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = redis.call('TIME')
local state = redis.call('HMGET', KEYS[1], 'tokens', 's', 'us')
local tokens = tonumber(state[1])
local sec, usec = now[1], now[2]
if tokens == nil or state[2] == false or state[3] == false then
  tokens = capacity
else
  local elapsed = (tonumber(now[1]) - tonumber(state[2]))
    + (tonumber(now[2]) - tonumber(state[3])) / 1000000
  if elapsed > 0 then
    tokens = math.min(capacity, tokens + elapsed * rate)
  else
    sec, usec = state[2], state[3]
  end
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 's', sec, 'us', usec)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, string.format('%.17g', wait)}
"""


class _LocalBuckets:
    """In-process token buckets, thread-safe, timed by an injected monotonic clock."""

    def __init__(self, capacity: int, rate: float, clock: Callable[[], float]) -> None:
        self._capacity = float(capacity)
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._full_after = capacity / rate
        self._swept = clock()

    def hit(self, key: str) -> float | None:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            tokens, updated = self._buckets.get(key, (self._capacity, now))
            if now > updated:
                tokens = min(self._capacity, tokens + (now - updated) * self._rate)
                updated = now
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, updated)
                return None
            self._buckets[key] = (tokens, updated)
            return (1 - tokens) / self._rate

    def _sweep(self, now: float) -> None:
        """Forget buckets idle long enough to be full again (as good as absent)."""
        if now - self._swept < self._full_after:
            return
        self._swept = now
        idle = [k for k, (_, updated) in self._buckets.items() if now - updated >= self._full_after]
        for key in idle:
            del self._buckets[key]


class RateLimiter:
    """Token bucket per key: ``capacity`` requests at once, refilled over ``window`` seconds.

    Args:
        capacity: Tokens in a full bucket (the largest burst).
        window: Seconds in which an empty bucket refills completely.
        redis_url: Redis shared by the replicas; ``None`` keeps buckets in this process.
        clock: Monotonic clock of the in-process buckets and of the Redis re-checks.
        prefix: Prefix of the Redis keys.
    """

    def __init__(
        self,
        *,
        capacity: int,
        window: float,
        redis_url: str | None,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "ratelimit:",
    ) -> None:
        if capacity < 1 or window <= 0:
            raise ValueError("capacity must be at least 1 and window positive")
        self.capacity = capacity
        self.window = window
        self.prefix = prefix
        self._rate = capacity / window
        self._ttl_ms = math.ceil(window * 1000) + 1000
        self._script_args: list[int | str] = [capacity, repr(self._rate), self._ttl_ms]
        self._clock = clock
        self._local = _LocalBuckets(capacity, self._rate, clock)
        self._redis: Redis | None = None
        self._script: Script | None = None
        self._async_redis: AsyncRedis | None = None
        self._async_script: Callable[..., Awaitable[Any]] | None = None
        if redis_url:
            self._redis = Redis.from_url(
                redis_url,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            self._script = self._redis.register_script(_HIT_SCRIPT)
            # Connects lazily, on the event loop of its first call (the API's loop).
            self._async_redis = AsyncRedis.from_url(
                redis_url,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                retry=AsyncRetry(NoBackoff(), 0),
            )
            self._async_script = self._async_redis.register_script(_HIT_SCRIPT)
        self._state_lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0

    @classmethod
    def of(cls, security: SecuritySettings, brokers: BrokerSettings) -> RateLimiter:
        """RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW, in the brokers' Redis (under
        QUEUE_PREFIX, as the queues: environments sharing a Redis keep apart)."""
        return cls(
            capacity=security.rate_limit_requests,
            window=security.rate_limit_window,
            redis_url=brokers.redis_url or None,
            prefix=f"ratelimit:{brokers.queue_prefix}",
        )

    @property
    def shared(self) -> bool:
        """True while the buckets live in Redis (shared by the replicas)."""
        return self._redis is not None and not self._down

    def hit(self, key: str) -> float | None:
        """Take a token from ``key``'s bucket.

        Returns:
            None when the request may go on, else the seconds until a token is available.
        """
        if self._script is not None and self._may_try_redis():
            try:
                reply = self._script(keys=[self.prefix + key], args=self._script_args)
            except Exception as exc:  # whatever Redis does, the request goes on
                self._redis_failed(exc)
            else:
                return self._redis_answered(reply)
        return self._local.hit(key)

    async def hit_async(self, key: str) -> float | None:
        """:meth:`hit` from the event loop: the Redis round trip does not block it."""
        if self._async_script is not None and self._may_try_redis():
            try:
                reply = await self._async_script(keys=[self.prefix + key], args=self._script_args)
            except Exception as exc:  # whatever Redis does, the request goes on
                self._redis_failed(exc)
            else:
                return self._redis_answered(reply)
        return self._local.hit(key)

    def close(self) -> None:
        """Release the synchronous client's connections (the limiter keeps working)."""
        if self._redis is None:
            return
        try:
            self._redis.close()
        except Exception:
            log.debug("ratelimit.redis.close_failed", exc_info=True)

    async def aclose(self) -> None:
        """Release every Redis connection, from the event loop the async client used."""
        self.close()
        try:
            if self._async_redis is not None:
                await self._async_redis.aclose()
        except Exception:
            log.debug("ratelimit.redis.close_failed", exc_info=True)

    def _may_try_redis(self) -> bool:
        """Outside an outage always; during one, a single caller every few seconds."""
        with self._state_lock:
            if not self._down:
                return True
            now = self._clock()
            if now < self._retry_at:
                return False
            self._retry_at = now + RECHECK_SECONDS
            return True

    def _redis_failed(self, exc: Exception) -> None:
        with self._state_lock:
            first = not self._down
            self._down = True
            self._retry_at = self._clock() + RECHECK_SECONDS
        if first:
            log.warning(
                "ratelimit.redis.unavailable",
                extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
            )

    def _redis_answered(self, reply: Any) -> float | None:
        """The script's ``[allowed, wait]`` as :meth:`hit` answers it; Redis is up again."""
        with self._state_lock:
            recovered = self._down
            self._down = False
        if recovered:
            log.info("ratelimit.redis.recovered")
        allowed, wait = reply
        return None if int(allowed) == 1 else float(wait)
