"""The Redis backend: shared sessions, counters and one-time values, watched by a monitor.

Two background tasks run in the lifespan: the *monitor* pings Redis (flipping
the health flag, see :mod:`.health`) and publishes this replica's policy
version (see :mod:`.registry`); the *invalidations* task keeps the
subscription that lets the session read cache exist at all (see
:mod:`.sessions`).  Both use their own small connection pool, so a request
burst can never look like an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Callable

import structlog
from redis.exceptions import RedisError
from starlette.middleware import Middleware

from gateway.features import ReadinessCheck
from gateway.settings import Settings

from .counters import RedisCounterStore
from .guard import StateGuardMiddleware
from .health import BackendHealth, describe
from .redis_client import connect, target
from .redis_once import RedisOneTimeStore
from .registry import ReplicaRegistry
from .replica import HoldsSlot, ReplicaSlot
from .sessions import RedisSessionStore

log = structlog.get_logger(__name__)

Emit = Callable[..., None]
VersionSource = Callable[[], "str | None"]


class RedisState(HoldsSlot):
    """Sessions, counters and one-time values in Redis, watched by a monitor task."""

    backend = "redis"
    shared = True

    def __init__(self, settings: Settings, slot: ReplicaSlot, *, emit: Emit) -> None:
        st = settings.state
        self.settings = settings
        self.slot = slot
        self.target = target(st)
        name = f"toolgate:{slot.replica_id}"
        self.client = connect(st, client_name=name)
        # The monitor has its own connection: a busy request pool must never
        # look like an outage.
        self.monitor_client = connect(st, client_name=name + ":monitor", max_connections=3)
        self.health = BackendHealth(emit=emit, backend="redis", target=self.target, replica=slot.replica_id)
        prefix = st.key_prefix
        self.sessions = RedisSessionStore(
            self.client, self.health, prefix=prefix, idle_timeout_s=settings.session.idle_timeout_s,
            cache_ttl_s=st.session_cache_s,
        )  # fmt: skip
        self.counters = RedisCounterStore(self.client, self.health, prefix=prefix)
        self.once = RedisOneTimeStore(self.client, self.health, prefix=prefix)
        self.registry = ReplicaRegistry(self.monitor_client, prefix=prefix, replica_id=slot.replica_id or "gateway")
        self._tasks: list[asyncio.Task[None]] = []
        self._run_id: str | None = None
        self._version: VersionSource = lambda: None

    def middleware(self) -> list[Middleware]:
        return [Middleware(StateGuardMiddleware, brand=self.settings.server.brand)]

    def readiness(self) -> dict[str, ReadinessCheck]:
        def check() -> tuple[bool, dict[str, object]]:
            h = self.health
            detail: dict[str, object] = {"backend": "redis", "replica": self.replica_id}
            if not h.available:
                # /readyz is public: say that, not where Redis lives or why.
                detail["error"] = "unreachable"
                detail["since"] = dt.datetime.fromtimestamp(h.since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            detail["fleet"] = self.registry.versions()
            return h.available, detail

        return {"state": check}

    # ------------------------------------------------------------ lifecycle

    async def start(self, policy_version: VersionSource) -> None:
        self._version = policy_version
        await self.check()
        if self.health.available:
            log.info("state.connected", backend="redis", target=self.target, replica=self.replica_id)
        self._tasks.append(asyncio.create_task(self._monitor(), name="state-monitor"))
        if self.sessions.cache_ttl_s > 0:
            self._tasks.append(asyncio.create_task(self._invalidations(), name="state-invalidations"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.sessions.cache_off()
        if self.health.available:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.registry.withdraw(), self.settings.state.timeout_s)
        for c in (self.client, self.monitor_client):
            with contextlib.suppress(Exception):
                await c.aclose()

    def release(self) -> None:
        self.slot.release()

    async def _monitor(self) -> None:
        interval = self.settings.state.health_interval_s
        while True:
            await self.health.wait_suspect(interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the monitor must outlive any bug
                log.exception("state_monitor_error")

    async def _invalidations(self) -> None:
        """Keep the revocation subscription; the session cache runs only while it is confirmed."""
        interval = self.settings.state.health_interval_s
        channel = self.sessions.channel
        while True:
            pubsub = self.monitor_client.pubsub()
            try:
                if self.health.available:
                    await pubsub.subscribe(channel)
                    deadline = asyncio.get_running_loop().time() + self.settings.state.timeout_s * 4
                    while True:  # Redis confirms: from here on no revocation can be missed
                        msg = await pubsub.get_message(timeout=self.settings.state.timeout_s)
                        if msg is not None and msg.get("type") == "subscribe":
                            break
                        if asyncio.get_running_loop().time() > deadline:
                            raise asyncio.TimeoutError("no subscribe confirmation")
                    self.sessions.cache_on()
                    while self.health.available:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval)
                        if msg is not None and msg.get("type") == "message":
                            self.sessions.evict(msg["data"].decode("utf-8", "replace"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.info("state_invalidations_lost", error=describe(exc))
                self.health.suspect()
            except Exception:  # noqa: BLE001 - never leave the cache on after a bug
                log.exception("state_invalidations_error")
            finally:
                self.sessions.cache_off()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(interval)

    async def check(self) -> None:
        """Ping; flip the health flag on a change; publish our policy version when due."""
        timeout = self.settings.state.timeout_s * 2
        mon = self.monitor_client
        try:
            await asyncio.wait_for(mon.ping(), timeout)
            if self._run_id is None or not self.health.available:
                info = await asyncio.wait_for(mon.info("server"), timeout)
                run_id = str(info.get("run_id", ""))
                restarted = self._run_id is not None and run_id != self._run_id
                self._run_id = run_id
            else:
                restarted = False
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.sessions.cache_off()
            self.health.mark_down(describe(exc))
            return
        if not self.health.available:
            # A restarted Redis without persistence has forgotten every
            # session: users sign in again.  Worth a line in the audit trail.
            self.health.mark_up(redis_restarted=restarted)
        version = self._version()
        if self.registry.due(version):
            try:
                await asyncio.wait_for(self.registry.publish(version), timeout)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("state_registry_publish_failed", error=describe(exc))
