"""Brute force meets back-off and 429, without letting an attacker lock others out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.auth.ratelimit import LoginLimiter, MemoryCounterStore

from ._support import ALICE_PASSWORD, Env, FakeClock, csrf_from, login, make_env


def limiter(clock: FakeClock, **kw: int) -> LoginLimiter:
    return LoginLimiter(MemoryCounterStore(), max_failures=kw.get("max_failures", 5), window_s=900, clock=clock,
                        ip_max_failures=kw.get("ip_max_failures"))  # fmt: skip


async def test_backoff_grows_then_locks() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    waits = []
    for _ in range(5):
        d = await lim.attempt("alice", "1.1.1.1")
        while not d.allowed:
            waits.append(d.retry_after)
            clock.advance(d.retry_after)
            d = await lim.attempt("alice", "1.1.1.1")
    assert waits == [1, 2, 4]  # after failures 2, 3 and 4
    locked = await lim.attempt("alice", "1.1.1.1")
    assert not locked.allowed and locked.scope == "account"
    assert 880 <= locked.retry_after <= 900
    clock.advance(locked.retry_after)
    assert (await lim.attempt("alice", "1.1.1.1")).allowed  # the window ended


async def test_lockout_is_per_account_and_ip() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_failures=2)
    await lim.attempt("alice", "6.6.6.6")
    clock.advance(5)
    await lim.attempt("alice", "6.6.6.6")
    assert not (await lim.attempt("alice", "6.6.6.6")).allowed
    assert (await lim.attempt("alice", "10.0.0.7")).allowed  # Alice herself, elsewhere
    assert (await lim.attempt("bob", "6.6.6.6")).allowed  # other accounts from that IP, until the IP cap


async def test_ip_cap_stops_spraying() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_failures=5, ip_max_failures=4)
    for i in range(4):
        assert (await lim.attempt(f"user{i}", "6.6.6.6")).allowed
    d = await lim.attempt("user99", "6.6.6.6")
    assert not d.allowed and d.scope == "ip" and d.retry_after > 0
    assert (await lim.attempt("user99", "7.7.7.7")).allowed


async def test_success_clears_the_account_counter() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_failures=3)
    await lim.attempt("alice", "1.1.1.1")
    clock.advance(2)
    await lim.attempt("alice", "1.1.1.1")
    await lim.succeeded("alice", "1.1.1.1")
    for _ in range(2):
        assert (await lim.attempt("alice", "1.1.1.1")).allowed


async def test_parallel_attempts_are_counted_before_the_password_check() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_failures=3)
    results = await asyncio.gather(*(lim.attempt("alice", "1.1.1.1") for _ in range(20)))
    assert sum(d.allowed for d in results) <= 2  # the 1st, the 2nd, then the back-off


# ---------------------------------------------------------------- over HTTP


async def test_brute_force_gets_429_while_another_ip_signs_in(tmp_path: Path, users_template: Path) -> None:
    env: Env = make_env(tmp_path, users_template, max_failures=3)
    attacker_app = env.app()
    async with env.client(ip="6.6.6.6", app=attacker_app) as attacker:
        statuses = []
        for i in range(4):
            resp = await login(attacker, "alice", f"guess-number-{i:04d}")
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                break
            env.clock.advance(0.5)
        assert statuses[-1] == 429
        assert int(resp.headers["retry-after"]) >= 1
        assert "Too many sign-in attempts" in resp.text
        # keep waiting out the back-off until locked for the whole window
        for _ in range(10):
            if resp.status_code == 429:
                if int(resp.headers["retry-after"]) > 60:
                    break
                env.clock.advance(int(resp.headers["retry-after"]))
            resp = await login(attacker, "alice", "another-wrong-guess")
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 60
        # even the right password is refused from the locked pair
        right = await login(attacker, "alice", ALICE_PASSWORD)
        assert right.status_code == 429
    async with env.client(ip="10.0.0.9") as alice:
        ok = await login(alice, "alice", ALICE_PASSWORD)
        assert ok.status_code == 303
    reasons = [e.get("reason") for e in env.emit.of("auth.login") if e["outcome"] == "failure"]
    assert "rate_limited" in reasons and "invalid_credentials" in reasons


async def test_rate_limited_answer_does_not_reveal_the_user(tmp_path: Path, users_template: Path) -> None:
    env = make_env(tmp_path, users_template, max_failures=2)
    async with env.client(ip="6.6.6.6") as c:
        codes = {}
        for name in ("alice", "nobody-here"):
            for _ in range(3):
                page = await c.get("/auth/login")
                r = await c.post(
                    "/auth/login",
                    data={"username": name, "password": "wrong-password-123", "csrf_token": csrf_from(page.text)},
                )
            codes[name] = r.status_code
        assert codes == {"alice": 429, "nobody-here": 429}
