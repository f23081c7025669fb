"""``RedisCounterStore``: sign-in failure counters that add up across replicas.

Same contract as :class:`gateway.auth.ratelimit.MemoryCounterStore`: a fixed
window that starts with the first hit.  ``hit`` and ``forgive`` are Lua
scripts, so two replicas counting the same key at the same moment both land
(a GET-then-SET from Python would lose one of them).  Keys expire a little
after their window, so Redis forgets old counters by itself.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.auth.ratelimit import Counter

from .health import BackendHealth

GRACE_S = 5.0

# ARGV: now, window (s), key TTL (ms)
_HIT = """
local v = redis.call('HMGET', KEYS[1], 'c', 'f')
if (not v[1]) or (tonumber(ARGV[1]) - tonumber(v[2]) >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'c', 1, 'f', ARGV[1], 'l', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, ARGV[1], ARGV[1]}
end
local n = redis.call('HINCRBY', KEYS[1], 'c', 1)
redis.call('HSET', KEYS[1], 'l', ARGV[1])
return {n, v[2], ARGV[1]}
"""

_FORGIVE = """
local c = redis.call('HGET', KEYS[1], 'c')
if not c then return 0 end
if tonumber(c) <= 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'c', -1)
"""


class RedisCounterStore:
    def __init__(self, client: Redis, health: BackendHealth, *, prefix: str) -> None:
        self.r = client
        self.health = health
        self.prefix = f"{prefix}c:"
        self._hit = client.register_script(_HIT)
        self._forgive = client.register_script(_FORGIVE)

    def _check(self) -> None:
        if not self.health.available:
            raise self.health.refuse()

    async def get(self, key: str, now: float, window_s: float) -> Counter | None:
        self._check()
        try:
            c, f, last = await self.r.hmget(self.prefix + key, "c", "f", "l")
        except RedisError as exc:
            raise self.health.failed(exc, op="counter.get") from None
        if c is None or f is None or now - float(f) >= window_s:
            return None
        return Counter(int(c), float(f), float(last if last is not None else f))

    async def hit(self, key: str, now: float, window_s: float) -> Counter:
        self._check()
        ttl_ms = int((window_s + GRACE_S) * 1000)
        try:
            n, f, last = await self._hit(keys=[self.prefix + key], args=[repr(now), repr(float(window_s)), ttl_ms])
        except RedisError as exc:
            raise self.health.failed(exc, op="counter.hit") from None
        return Counter(int(n), float(f), float(last))

    async def forgive(self, key: str) -> None:
        self._check()
        try:
            await self._forgive(keys=[self.prefix + key])
        except RedisError as exc:
            raise self.health.failed(exc, op="counter.forgive") from None

    async def reset(self, key: str) -> None:
        self._check()
        try:
            await self.r.delete(self.prefix + key)
        except RedisError as exc:
            raise self.health.failed(exc, op="counter.reset") from None
