"""The Redis stores against a real redis-server, held to the same contract as the memory ones."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.auth.ratelimit import MemoryCounterStore
from gateway.auth.sessions import MemorySessionStore, SessionRecord
from gateway.settings import StateSettings, load_settings
from gateway.state import StateUnavailable, build_state
from gateway.state.counters import RedisCounterStore
from gateway.state.health import BackendHealth
from gateway.state.once import MemoryOneTimeStore
from gateway.state.redis_client import connect
from gateway.state.redis_once import RedisOneTimeStore
from gateway.state.sessions import GRACE_S, RedisSessionStore
from tests.helpers import make_config_dir, write_secret

from .infra import REDIS_BIN, SKIP_REDIS, RedisServer, make_certs

pytestmark = pytest.mark.skipif(REDIS_BIN is None, reason=SKIP_REDIS)

IDLE = 1800.0


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, dict[str, Any]]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.items.append((action, outcome, fields))

    def actions(self) -> list[str]:
        return [a for a, _, _ in self.items]


def state_settings(server: RedisServer, tmp_path: Path) -> StateSettings:
    pw = tmp_path / "redis.password"
    write_secret(pw, (server.password or "") + "\n")
    return StateSettings(backend="redis", redis_url=server.url, password_file=pw if server.password else None, timeout_s=0.5)


class Replica:
    """What one gateway process holds: its own client and health, the shared prefix."""

    def __init__(self, settings: StateSettings, prefix: str) -> None:
        self.client = connect(settings)
        self.health = BackendHealth(emit=Events(), backend="redis", target="test", replica=None)
        self.sessions = RedisSessionStore(self.client, self.health, prefix=prefix, idle_timeout_s=IDLE)
        self.counters = RedisCounterStore(self.client, self.health, prefix=prefix)
        self.once = RedisOneTimeStore(self.client, self.health, prefix=prefix)

    async def close(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def replicas(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    settings = state_settings(redis_server, tmp_path)
    prefix = f"t{secrets.token_hex(4)}:"
    pair = (Replica(settings, prefix), Replica(settings, prefix))
    yield pair
    for r in pair:
        await r.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> str:
    return request.param


@pytest.fixture
async def stores(backend: str, replicas: tuple[Replica, Replica]) -> tuple[Any, Any, Any]:
    if backend == "memory":
        return MemorySessionStore(), MemoryCounterStore(), MemoryOneTimeStore()
    r = replicas[0]
    return r.sessions, r.counters, r.once


def record(user: str = "alice", *, now: float | None = None, sid: str | None = None) -> SessionRecord:
    now = time.time() if now is None else now
    return SessionRecord(
        session_id=sid or secrets.token_urlsafe(32),
        user=user,
        email=f"{user}@example.com",
        groups=("employees", "ops"),
        auth_method="password",
        created_at=now,
        last_seen=now,
        expires_at=now + 43200,
        client_ip="192.0.2.10",
        user_agent="pytest/éè",
    )


# ------------------------------------------------------------------ sessions (both backends)


async def test_session_round_trip(stores) -> None:
    sessions = stores[0]
    rec = record()
    await sessions.create(rec)
    assert await sessions.get(rec.session_id) == rec
    assert await sessions.get("no-such-session") is None


async def test_touch_moves_last_seen_forward_only(stores) -> None:
    sessions = stores[0]
    rec = record()
    await sessions.create(rec)
    later = await sessions.touch(rec.session_id, rec.last_seen + 90)
    assert later is not None and later.last_seen == rec.last_seen + 90
    earlier = await sessions.touch(rec.session_id, rec.last_seen + 10)
    assert earlier is not None and earlier.last_seen == rec.last_seen + 90
    assert await sessions.touch("no-such-session", time.time()) is None


async def test_revoke_once_and_touch_cannot_undo_it(stores) -> None:
    sessions = stores[0]
    rec = record()
    await sessions.create(rec)
    revoked = await sessions.revoke(rec.session_id, reason="logout", now=rec.created_at + 5)
    assert revoked is not None and revoked.revoked_at == rec.created_at + 5 and revoked.revoked_reason == "logout"
    assert await sessions.revoke(rec.session_id, reason="again", now=rec.created_at + 6) is None
    after = await sessions.touch(rec.session_id, rec.created_at + 100)
    assert after is not None and after.revoked_at == rec.created_at + 5 and after.last_seen == rec.last_seen
    assert (await sessions.get(rec.session_id)).revoked_reason == "logout"


async def test_revoke_user_ends_only_that_users_sessions(stores) -> None:
    sessions = stores[0]
    a1, a2, b1 = record("alice"), record("alice"), record("bob")
    for r in (a1, a2, b1):
        await sessions.create(r)
    await sessions.revoke(a2.session_id, reason="logout", now=time.time())
    done = await sessions.revoke_user("alice", reason="disabled", now=time.time())
    assert [r.session_id for r in done] == [a1.session_id]
    assert (await sessions.get(a1.session_id)).revoked_reason == "disabled"
    assert (await sessions.get(a2.session_id)).revoked_reason == "logout"
    assert (await sessions.get(b1.session_id)).revoked_at is None
    assert await sessions.revoke_user("alice", reason="disabled", now=time.time()) == []


# ------------------------------------------------------------------ sessions (redis only)


async def test_a_revocation_on_one_replica_holds_on_the_other(replicas) -> None:
    a, b = replicas
    rec = record()
    await a.sessions.create(rec)
    assert (await b.sessions.get(rec.session_id)) == rec
    await b.sessions.revoke(rec.session_id, reason="logout", now=time.time())
    assert (await a.sessions.get(rec.session_id)).revoked_at is not None


async def test_concurrent_touches_never_resurrect_a_revoked_session(replicas) -> None:
    a, b = replicas
    recs = [record() for _ in range(30)]
    for r in recs:
        await a.sessions.create(r)
    now = time.time() + 120
    jobs = []
    for r in recs:
        jobs += [a.sessions.touch(r.session_id, now), b.sessions.revoke(r.session_id, reason="logout", now=now),
                 a.sessions.touch(r.session_id, now + 1)]  # fmt: skip
    await asyncio.gather(*jobs)
    for r in recs:
        assert (await a.sessions.get(r.session_id)).revoked_at == now


async def test_records_expire_inside_redis(replicas) -> None:
    a, _ = replicas
    rec = record()
    await a.sessions.create(rec)
    ttl = await a.client.pttl(a.sessions.session_prefix + rec.session_id)
    assert (IDLE + GRACE_S - 5) * 1000 < ttl <= (IDLE + GRACE_S) * 1000
    user_ttl = await a.client.pttl(a.sessions.user_prefix + "alice")
    assert user_ttl > 43200 * 1000
    assert await a.sessions.count() == 1


# ------------------------------------------------------------------ counters


async def test_counter_window(stores) -> None:
    counters = stores[1]
    t0 = 1_000_000.0
    assert await counters.get("k", t0, 60) is None
    c1 = await counters.hit("k", t0, 60)
    c2 = await counters.hit("k", t0 + 1.5, 60)
    assert (c1.count, c2.count, c2.first_at, c2.last_at) == (1, 2, t0, t0 + 1.5)
    got = await counters.get("k", t0 + 2, 60)
    assert got is not None and (got.count, got.first_at, got.last_at) == (2, t0, t0 + 1.5)
    assert await counters.get("k", t0 + 60, 60) is None  # the window ended
    fresh = await counters.hit("k", t0 + 61, 60)
    assert (fresh.count, fresh.first_at) == (1, t0 + 61)


async def test_counter_forgive_and_reset(stores) -> None:
    counters = stores[1]
    t0 = time.time()
    for _ in range(3):
        await counters.hit("k", t0, 60)
    await counters.forgive("k")
    assert (await counters.get("k", t0, 60)).count == 2
    await counters.forgive("k")
    await counters.forgive("k")
    assert await counters.get("k", t0, 60) is None
    await counters.hit("k", t0, 60)
    await counters.reset("k")
    assert await counters.get("k", t0, 60) is None


async def test_counters_from_two_replicas_at_once_all_count(replicas) -> None:
    a, b = replicas
    now = time.time()
    await asyncio.gather(*[(a if i % 2 else b).counters.hit("login:ip:192.0.2.1", now, 900) for i in range(200)])
    assert (await a.counters.get("login:ip:192.0.2.1", now, 900)).count == 200
    ttl = await a.client.pttl(a.counters.prefix + "login:ip:192.0.2.1")
    assert 900_000 < ttl <= 905_000


# ------------------------------------------------------------------ one-time values


async def test_one_time_values_are_spent_once(stores) -> None:
    once = stores[2]
    assert await once.spend("state-abc", 60) is True
    assert await once.spend("state-abc", 60) is False
    assert await once.spend("state-def", 60) is True


async def test_one_time_value_spent_on_one_replica_is_spent_on_all(replicas) -> None:
    a, b = replicas
    results = await asyncio.gather(*[(a if i % 2 else b).once.spend("flow-state-1", 60) for i in range(20)])
    assert results.count(True) == 1


# ------------------------------------------------------------------ outage and recovery


def gateway_settings(tmp_path: Path, server: RedisServer, extra: str = "", replica: str = "unit") -> Any:
    cfg_dir = tmp_path / "cfg"
    if server.password:
        write_secret(cfg_dir / "secrets" / "redis.password", server.password + "\n")
    pw = 'password_file = "secrets/redis.password"\n' if server.password else ""
    cfg = make_config_dir(
        cfg_dir,
        sections_extra=f'[state]\nbackend = "redis"\nredis_url = "{server.url}"\n{pw}timeout_s = 0.3\n'
        f'health_interval_s = 0.1\nreplica_id = "{replica}"\n{extra}',
    )
    return load_settings(cfg, environ={})


async def test_outage_fails_closed_then_recovers_by_itself(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password=secrets.token_urlsafe(12)).start()
    events = Events()
    state = build_state(gateway_settings(tmp_path, server), emit=events)
    try:
        await state.start(lambda: "v1")
        assert state.health.available and events.actions() == []
        rec = record()
        await state.sessions.create(rec)

        server.stop()
        t = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.sessions.get(rec.session_id)
        assert time.monotonic() - t < 2.0
        await asyncio.wait_for(_until(lambda: not state.health.available), 5)
        # Down: calls are refused at once, without waiting on the network.
        t = time.monotonic()
        for _ in range(50):
            with pytest.raises(StateUnavailable):
                await state.counters.hit("k", time.time(), 60)
        assert time.monotonic() - t < 0.1
        ok, detail = state.readiness()["state"]()
        assert ok is False and detail["error"] == "unreachable" and "6379" not in str(detail)
        await asyncio.sleep(0.5)  # more failed checks: still one transition
        assert events.actions() == ["state.unavailable"]
        assert events.items[0][1] == "failure"

        server.start()
        await asyncio.wait_for(_until(lambda: state.health.available), 5)
        assert events.actions() == ["state.unavailable", "state.recovered"]
        assert events.items[1][2]["details"]["redis_restarted"] is True
        assert await state.sessions.get(rec.session_id) is None  # no persistence: sessions are gone
        await state.sessions.create(rec)
        assert await state.sessions.get(rec.session_id) == rec
        assert server.password not in repr(events.items)
    finally:
        await state.stop()
        state.release()
        server.stop()


async def _until(predicate) -> None:  # noqa: ANN001
    while not predicate():
        await asyncio.sleep(0.02)


async def test_wrong_password_is_an_outage_without_leaking_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="the-right-one").start()
    try:
        settings = gateway_settings(tmp_path, server)
        settings.state.password_file.write_text("a-wrong-password\n")
        events = Events()
        state = build_state(settings, emit=events)
        await state.start(lambda: None)
        try:
            assert not state.health.available
            assert events.actions() == ["state.unavailable"]
            assert "a-wrong-password" not in repr(events.items) and "the-right-one" not in repr(events.items)
        finally:
            await state.stop()
            state.release()
    finally:
        server.stop()


async def test_tls_with_verified_server_and_client_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    server = RedisServer(tmp_path / "redis", tls=certs, tls_auth_clients=True).start()
    try:
        for name, extra, works in [
            ("good", f'tls_ca_file = "{certs.ca}"\ntls_cert_file = "{certs.client_cert}"\ntls_key_file = "{certs.client_key}"\n', True),
            ("no-client-cert", f'tls_ca_file = "{certs.ca}"\n', False),
            ("unknown-ca", f'tls_ca_file = "{make_certs(tmp_path / "other", name="Other CA").ca}"\n'
                           f'tls_cert_file = "{certs.client_cert}"\ntls_key_file = "{certs.client_key}"\n', False),
        ]:  # fmt: skip
            state = build_state(gateway_settings(tmp_path / name, server, extra), emit=Events())
            await state.start(lambda: None)
            try:
                assert state.health.available is works, name
                if works:
                    rec = record()
                    await state.sessions.create(rec)
                    assert await state.sessions.get(rec.session_id) == rec
            finally:
                await state.stop()
                state.release()
    finally:
        server.stop()


async def test_readiness_lists_the_fleet_policy_versions(redis_server: RedisServer, tmp_path: Path) -> None:
    one = build_state(gateway_settings(tmp_path / "one", redis_server, 'key_prefix = "fleet:"\n', "gw-1"), emit=Events())
    two = build_state(gateway_settings(tmp_path / "two", redis_server, 'key_prefix = "fleet:"\n', "gw-2"), emit=Events())
    try:
        await one.start(lambda: "v1")
        await two.start(lambda: "v2")
        await one.check()  # the heartbeat is not due yet: the fleet view is from start-up
        assert one.readiness()["state"]()[1]["fleet"] == {"gw-1": "v1"}
        one.registry.published_at = 0  # make the heartbeat due
        await one.check()
        ok, detail = one.readiness()["state"]()
        assert ok and detail["fleet"] == {"gw-1": "v1", "gw-2": "v2"}
        await two.stop()  # a replica that stops withdraws its entry
        one.registry.published_at = 0
        await one.check()
        assert one.readiness()["state"]()[1]["fleet"] == {"gw-1": "v1"}
    finally:
        for s in (one, two):
            await s.stop()
            s.release()


def test_processes_of_one_replica_take_separate_slots_and_audit_chains(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, redis_server, replica="gw")
    first, second = build_state(settings), build_state(settings)
    try:
        assert (first.replica_id, second.replica_id) == ("gw", "gw.w1")
        root = settings.audit.path.parent
        assert first.audit_settings.path == root / "gw" / settings.audit.path.name
        assert second.audit_settings.path == root / "gw.w1" / settings.audit.path.name
        first.release()
        again = build_state(settings)  # a restarted worker gets the free slot back: same chain
        assert again.replica_id == "gw"
        again.release()
    finally:
        first.release()
        second.release()


# ------------------------------------------------------------------ the read cache


async def _hgetall_calls(client) -> int:  # noqa: ANN001
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_cached_reads_and_revocation_reaching_the_other_replica_at_once(redis_server: RedisServer, tmp_path: Path) -> None:
    extra = 'key_prefix = "cache:"\nsession_cache_s = 5\n'  # long: only the invalidation can explain a quick refusal
    a = build_state(gateway_settings(tmp_path / "a", redis_server, extra, "gw-a"), emit=Events())
    b = build_state(gateway_settings(tmp_path / "b", redis_server, extra, "gw-b"), emit=Events())
    try:
        await a.start(lambda: None)
        await b.start(lambda: None)
        await asyncio.wait_for(_until(lambda: a.sessions._cache_live and b.sessions._cache_live), 5)
        rec = record()
        await b.sessions.create(rec)
        before = await _hgetall_calls(a.client)
        for _ in range(100):
            assert await a.sessions.get(rec.session_id) == rec
        assert await _hgetall_calls(a.client) - before <= 2  # (INFO itself is not an HGETALL)

        await b.sessions.revoke(rec.session_id, reason="logout", now=time.time())
        t = time.monotonic()
        await asyncio.wait_for(_until_revoked(a, rec.session_id), 1.0)
        assert time.monotonic() - t < 0.5

        # revoke_user goes out the same way.
        rec2 = record("carol")
        await b.sessions.create(rec2)
        assert (await a.sessions.get(rec2.session_id)).revoked_at is None
        await b.sessions.revoke_user("carol", reason="disabled", now=time.time())
        await asyncio.wait_for(_until_revoked(a, rec2.session_id), 1.0)
    finally:
        for s in (a, b):
            await s.stop()
            s.release()


async def _until_revoked(state, session_id: str) -> None:  # noqa: ANN001
    while (await state.sessions.get(session_id)).revoked_at is None:
        await asyncio.sleep(0.005)


async def test_cache_is_dropped_when_the_subscription_is_lost(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="pw").start()
    state = build_state(gateway_settings(tmp_path, server, "session_cache_s = 5\n"), emit=Events())
    try:
        await state.start(lambda: None)
        await asyncio.wait_for(_until(lambda: state.sessions._cache_live), 5)
        rec = record()
        await state.sessions.create(rec)
        await state.sessions.get(rec.session_id)
        assert rec.session_id in state.sessions._cache
        server.stop()
        await asyncio.wait_for(_until(lambda: not state.sessions._cache_live), 3)
        assert state.sessions._cache == {}
        with pytest.raises(StateUnavailable):
            await state.sessions.get(rec.session_id)
    finally:
        await state.stop()
        state.release()
        server.stop()
