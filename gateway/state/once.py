"""One-time tokens: "has this value been used before?" answered once, fleet-wide.

For single-use secrets that travel in signed cookies (an OIDC flow's
``state``): the signature proves the value is ours, this store proves it is
fresh.  Values are hashed before they are stored.  ``spend`` returns True the
first time a value is seen within ``ttl_s`` and False on every replay, on any
replica (Redis: ``SET NX`` is atomic, see :mod:`.redis_once`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Protocol


class OneTimeStore(Protocol):
    async def spend(self, value: str, ttl_s: float) -> bool: ...


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class MemoryOneTimeStore:
    """In-process; bounded (oldest entries go first, they are the closest to expiring)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def spend(self, value: str, ttl_s: float) -> bool:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        key = digest(value)
        if key in self._seen:
            return False
        self._seen[key] = now + ttl_s
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True
