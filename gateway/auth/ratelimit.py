"""Brute-force limits for password sign-in.

Two counters per attempt, both over a fixed window (``login_window_s``):

* ``account+IP``: after the second failure each further try must wait an
  exponentially growing delay (1 s, 2 s, 4 s, ...); at ``max_failures`` the
  pair is locked until the window ends.  Because the key includes the IP, an
  attacker who hammers ``alice`` locks out only *their* address, never Alice
  signing in from elsewhere.
* ``IP``: a global cap (default ``10 x max_failures``) on failures from one
  address across all accounts, against password spraying.

An attempt is counted *before* the password is checked and forgiven on
success, so parallel requests cannot slip past the limit while scrypt runs.
Refusals carry ``retry_after`` (whole seconds) for the 429 ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True, slots=True)
class Counter:
    count: int
    first_at: float
    last_at: float


class CounterStore(Protocol):
    """Windowed failure counters.  ``hit`` starts a new window when the old one ended."""

    async def get(self, key: str, now: float, window_s: float) -> Counter | None: ...
    async def hit(self, key: str, now: float, window_s: float) -> Counter: ...
    async def forgive(self, key: str) -> None: ...  # one failure fewer
    async def reset(self, key: str) -> None: ...


class MemoryCounterStore:
    """In-process counters; bounded, expired entries pruned as it fills."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._data: dict[str, Counter] = {}

    async def get(self, key: str, now: float, window_s: float) -> Counter | None:
        c = self._data.get(key)
        if c is not None and now - c.first_at >= window_s:
            del self._data[key]
            return None
        return c

    async def hit(self, key: str, now: float, window_s: float) -> Counter:
        c = await self.get(key, now, window_s)
        if c is None:
            if len(self._data) >= self.max_keys:
                self._prune(now, window_s)
            c = Counter(1, now, now)
        else:
            c = Counter(c.count + 1, c.first_at, now)
        self._data[key] = c
        return c

    async def forgive(self, key: str) -> None:
        c = self._data.get(key)
        if c is None:
            return
        if c.count <= 1:
            del self._data[key]
        else:
            self._data[key] = Counter(c.count - 1, c.first_at, c.last_at)

    async def reset(self, key: str) -> None:
        self._data.pop(key, None)

    def _prune(self, now: float, window_s: float) -> None:
        for k in [k for k, c in self._data.items() if now - c.first_at >= window_s]:
            del self._data[k]
        while len(self._data) >= self.max_keys:  # still full: drop the oldest
            del self._data[next(iter(self._data))]


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    retry_after: int = 0  # seconds; set when refused
    scope: str = ""  # "account" | "ip" when refused


class LoginLimiter:
    """Decides whether a sign-in attempt may proceed.

    Use: ``d = await attempt(user, ip)``; if ``not d.allowed`` answer 429 with
    ``Retry-After: d.retry_after``; otherwise check the password and call
    ``succeeded(user, ip)`` when it was right (failures need no call).
    """

    def __init__(
        self,
        store: CounterStore,
        *,
        max_failures: int,
        window_s: float,
        ip_max_failures: int | None = None,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures and window_s must be positive")
        self.store = store
        self.max_failures = max_failures
        self.window_s = float(window_s)
        self.ip_max_failures = ip_max_failures or max_failures * 10
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.clock = clock

    @staticmethod
    def _keys(username: str, ip: str) -> tuple[str, str]:
        # Hash the typed name: bounded key size, and no typed secrets kept in memory as-is.
        acct = hashlib.sha256(username.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]
        return f"login:acct:{acct}|ip:{ip}", f"login:ip:{ip}"

    def _delay(self, failures: int) -> float:
        if failures < 2:
            return 0.0
        return min(self.base_delay_s * 2 ** (failures - 2), self.max_delay_s)

    async def check(self, username: str, ip: str) -> LimitDecision:
        """Would an attempt be allowed now?  Counts nothing."""
        now = self.clock()
        acct_key, ip_key = self._keys(username, ip)
        ipc = await self.store.get(ip_key, now, self.window_s)
        if ipc is not None and ipc.count >= self.ip_max_failures:
            return LimitDecision(False, _ceil(ipc.first_at + self.window_s - now), "ip")
        c = await self.store.get(acct_key, now, self.window_s)
        if c is None:
            return LimitDecision(True)
        if c.count >= self.max_failures:
            return LimitDecision(False, _ceil(c.first_at + self.window_s - now), "account")
        wait = c.last_at + self._delay(c.count) - now
        if wait > 0:
            return LimitDecision(False, _ceil(wait), "account")
        return LimitDecision(True)

    async def attempt(self, username: str, ip: str) -> LimitDecision:
        """Check, and when allowed count the attempt as a failure until proven right."""
        decision = await self.check(username, ip)
        if decision.allowed:
            now = self.clock()
            acct_key, ip_key = self._keys(username, ip)
            await self.store.hit(acct_key, now, self.window_s)
            await self.store.hit(ip_key, now, self.window_s)
        return decision

    async def succeeded(self, username: str, ip: str) -> None:
        acct_key, ip_key = self._keys(username, ip)
        await self.store.reset(acct_key)
        await self.store.forgive(ip_key)


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))
