"""Which policy version each replica serves, kept in one Redis hash.

Every replica writes its entry (``P replicas`` field ``<replica id>``) when
its policy version changes and every ``PUBLISH_EVERY_S`` as a heartbeat;
entries not refreshed for ``STALE_AFTER_S`` are dropped by whoever notices.
``/readyz`` shows the fleet, so an operator sees at a glance whether a policy
change has reached every replica.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from redis.asyncio import Redis

PUBLISH_EVERY_S = 5.0
STALE_AFTER_S = 30.0


class ReplicaRegistry:
    def __init__(self, client: "Redis", *, prefix: str, replica_id: str) -> None:
        self.r = client
        self.key = f"{prefix}replicas"
        self.replica_id = replica_id
        self.started_at = time.time()
        self.published_version: str | None = None
        self.published_at = 0.0
        self.fleet: dict[str, dict[str, Any]] = {}

    def due(self, version: str | None) -> bool:
        return version != self.published_version or time.time() - self.published_at >= PUBLISH_EVERY_S

    async def publish(self, policy_version: str | None) -> None:
        """Write our entry and refresh the fleet view (raises redis errors to the caller)."""
        now = time.time()
        entry = {
            "policy_version": policy_version,
            "seen_at": now,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        await self.r.hset(self.key, self.replica_id, orjson.dumps(entry))
        raw = await self.r.hgetall(self.key)
        fleet: dict[str, dict[str, Any]] = {}
        stale: list[bytes] = []
        for name, value in raw.items():
            try:
                e = orjson.loads(value)
                fresh = now - float(e.get("seen_at", 0)) < STALE_AFTER_S
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                fresh = False
            if fresh:
                fleet[name.decode("utf-8", "replace")] = e
            else:
                stale.append(name)
        if stale:
            await self.r.hdel(self.key, *stale)
        self.fleet = fleet
        self.published_version = policy_version
        self.published_at = now

    async def withdraw(self) -> None:
        await self.r.hdel(self.key, self.replica_id)

    def versions(self) -> dict[str, str | None]:
        return {name: e.get("policy_version") for name, e in sorted(self.fleet.items())}
