"""One-time values in Redis: ``SET NX PX``, so exactly one replica spends each value."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .health import BackendHealth
from .once import digest


class RedisOneTimeStore:
    def __init__(self, client: Redis, health: BackendHealth, *, prefix: str) -> None:
        self.r = client
        self.health = health
        self.prefix = f"{prefix}o:"

    async def spend(self, value: str, ttl_s: float) -> bool:
        if not self.health.available:
            raise self.health.refuse()
        try:
            return bool(await self.r.set(self.prefix + digest(value), b"1", nx=True, px=max(1, int(ttl_s * 1000))))
        except RedisError as exc:
            raise self.health.failed(exc, op="once.spend") from None
