"""``RedisSessionStore``: the :class:`~gateway.auth.sessions.SessionStore` shared by every replica.

Layout (``P`` is ``state.key_prefix``):

* ``P s:<session id>``  hash ``r`` (JSON of the fields that never change),
  ``l`` last seen, ``e`` absolute deadline, ``x``/``y`` revoked at / why.
  It expires by itself: ``min(absolute deadline, idle timeout) + grace``
  from the last touch, so Redis sweeps idle sessions without a scan.
* ``P u:<user>``  set of that user's session ids, for ``revoke_user``.

Every state change is one Lua script, so a touch racing a revocation on
another replica can never resurrect the session (a read-modify-write from
Python could).  A revoked record stays as a tombstone until it expires, so
the owner is told "your session has ended" rather than "unknown".

**Read cache.**  Asking Redis on every request costs more than the rest of
a cheap request, so a replica may reuse a record it read for
``cache_ttl_s`` (``state.session_cache_s``, default 1 s).  Revocation does
not wait for that: the revoking script itself publishes the session id on
``P revoked`` (atomically with the change), and every replica's subscriber
drops it at once.  The cache is used only while that subscription is live
and Redis healthy; it is emptied whenever either is lost, so a missed
message can never keep a revoked session alive, and an outage is never
papered over.  A fetch that overlapped an eviction is not cached.  What the
cache can delay (by at most ``cache_ttl_s``) is ``last_seen`` written by
another replica, far below any idle timeout.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.auth.sessions import SessionRecord

from .health import BackendHealth

GRACE_S = 60.0
CACHE_MAX = 50_000

_CREATE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'l', ARGV[2], 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 1
"""

# ARGV: now, idle timeout (s), grace (s)
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'x') == 0 then
  local now = tonumber(ARGV[1])
  if now > tonumber(redis.call('HGET', KEYS[1], 'l')) then
    redis.call('HSET', KEYS[1], 'l', ARGV[1])
  end
  local left = math.min(tonumber(redis.call('HGET', KEYS[1], 'e')) - now, tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor((left + tonumber(ARGV[3])) * 1000)))
end
return redis.call('HGETALL', KEYS[1])
"""

# ARGV: now, reason, invalidation channel, session id
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'x') == 1 then return false end
redis.call('HSET', KEYS[1], 'x', ARGV[1], 'y', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1]: the user's set; ARGV: now, reason, session key prefix, channel.
# Session keys are derived inside the script: one atomic step (single Redis,
# not Cluster).
_REVOKE_USER = """
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[3] .. sid
  if redis.call('EXISTS', k) == 0 then
    redis.call('SREM', KEYS[1], sid)
  elseif redis.call('HEXISTS', k, 'x') == 0 then
    redis.call('HSET', k, 'x', ARGV[1], 'y', ARGV[2])
    redis.call('PUBLISH', ARGV[4], sid)
    table.insert(out, sid)
    table.insert(out, redis.call('HGETALL', k))
  end
end
return out
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _fields(flat: list[Any] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _record(session_id: str, h: dict[bytes, bytes]) -> SessionRecord | None:
    raw = h.get(b"r")
    if raw is None:
        return None  # expired between calls, or not ours
    user, email, groups, auth_method, created_at, client_ip, user_agent = orjson.loads(raw)
    revoked = h.get(b"x")
    return SessionRecord(
        session_id=session_id,
        user=user,
        email=email,
        groups=tuple(groups),
        auth_method=auth_method,
        created_at=float(created_at),
        last_seen=float(h[b"l"]),
        expires_at=float(h[b"e"]),
        client_ip=client_ip,
        user_agent=user_agent,
        revoked_at=float(revoked) if revoked is not None else None,
        revoked_reason=h.get(b"y", b"").decode("utf-8", "replace"),
    )


class RedisSessionStore:
    """Sessions in Redis; same contract as ``MemorySessionStore``.

    ``idle_timeout_s`` sets how long an untouched record lives in Redis (the
    session manager still decides idleness itself, on its own clock).
    """

    def __init__(
        self, client: Redis, health: BackendHealth, *, prefix: str, idle_timeout_s: float, cache_ttl_s: float = 0.0
    ) -> None:
        self.r = client
        self.health = health
        self.session_prefix = f"{prefix}s:"
        self.user_prefix = f"{prefix}u:"
        self.channel = f"{prefix}revoked"
        self.idle_timeout_s = float(idle_timeout_s)
        self.cache_ttl_s = float(cache_ttl_s)
        self._cache: dict[str, tuple[SessionRecord, float]] = {}
        self._cache_live = False  # set only by the subscriber, while it is subscribed
        self._evictions = 0
        self._create = client.register_script(_CREATE)
        self._touch = client.register_script(_TOUCH)
        self._revoke = client.register_script(_REVOKE)
        self._revoke_user = client.register_script(_REVOKE_USER)

    def _key(self, session_id: str) -> str:
        return self.session_prefix + session_id

    def _check(self) -> None:
        if not self.health.available:
            raise self.health.refuse()

    # ------------------------------------------------------------ read cache

    def cache_on(self) -> None:
        """The subscription is confirmed: from now on every revocation reaches :meth:`evict`."""
        self._cache.clear()
        self._evictions += 1
        self._cache_live = self.cache_ttl_s > 0

    def cache_off(self) -> None:
        self._cache_live = False
        self._cache.clear()
        self._evictions += 1

    def evict(self, session_id: str) -> None:
        self._evictions += 1
        self._cache.pop(session_id, None)

    def _remember(self, rec: SessionRecord, evictions: int) -> None:
        if self._cache_live and evictions == self._evictions:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[rec.session_id] = (rec, time.monotonic())

    async def create(self, record: SessionRecord) -> None:
        self._check()
        fixed = orjson.dumps(
            [record.user, record.email, list(record.groups), record.auth_method, record.created_at, record.client_ip, record.user_agent]
        )
        left = min(record.expires_at - record.last_seen, self.idle_timeout_s)
        ttl_ms = max(1, int((left + GRACE_S) * 1000))
        user_ttl_ms = max(1, int((record.expires_at - record.last_seen + GRACE_S) * 1000))
        try:
            await self._create(
                keys=[self._key(record.session_id), self.user_prefix + record.user],
                args=[fixed, repr(record.last_seen), repr(record.expires_at), ttl_ms, record.session_id, user_ttl_ms],
            )
        except RedisError as exc:
            raise self.health.failed(exc, op="session.create") from None

    async def get(self, session_id: str) -> SessionRecord | None:
        self._check()
        if self._cache_live:
            hit = self._cache.get(session_id)
            if hit is not None and time.monotonic() - hit[1] < self.cache_ttl_s:
                return hit[0]
        evictions = self._evictions
        try:
            h = await self.r.hgetall(self._key(session_id))
        except RedisError as exc:
            raise self.health.failed(exc, op="session.get") from None
        rec = _record(session_id, h) if h else None
        if rec is not None:  # absence is never cached: a new session must show at once
            self._remember(rec, evictions)
        return rec

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        self._check()
        evictions = self._evictions
        try:
            flat = await self._touch(keys=[self._key(session_id)], args=[repr(now), self.idle_timeout_s, GRACE_S])
        except RedisError as exc:
            raise self.health.failed(exc, op="session.touch") from None
        rec = _record(session_id, _fields(flat)) if flat else None
        if rec is not None:
            self._remember(rec, evictions)
        return rec

    async def revoke(self, session_id: str, *, reason: str, now: float) -> SessionRecord | None:
        self._check()
        self.evict(session_id)
        try:
            flat = await self._revoke(keys=[self._key(session_id)], args=[repr(now), reason, self.channel, session_id])
        except RedisError as exc:
            raise self.health.failed(exc, op="session.revoke") from None
        self.evict(session_id)
        return _record(session_id, _fields(flat)) if flat else None

    async def revoke_user(self, user: str, *, reason: str, now: float) -> list[SessionRecord]:
        self._check()
        try:
            out = await self._revoke_user(
                keys=[self.user_prefix + user], args=[repr(now), reason, self.session_prefix, self.channel]
            )
        except RedisError as exc:
            raise self.health.failed(exc, op="session.revoke_user") from None
        records = []
        for i in range(0, len(out), 2):
            rec = _record(out[i].decode("utf-8"), _fields(out[i + 1]))
            if rec is not None:
                self.evict(rec.session_id)
                records.append(rec)
        return records

    async def sweep(self, now: float, idle_timeout_s: float) -> int:
        # Records expire inside Redis (see the module doc); nothing to scan.
        return 0

    async def count(self) -> int:
        """Sessions held (revoked tombstones included); a SCAN, for admin views only."""
        self._check()
        n = 0
        try:
            async for _ in self.r.scan_iter(match=_glob_escape(self.session_prefix) + "*", count=1000):
                n += 1
        except RedisError as exc:
            raise self.health.failed(exc, op="session.count") from None
        return n
