"""Session cookies: every way to break one is refused (never a 500), timeouts
and revocation hold, keys rotate."""

from __future__ import annotations

import hashlib

import pytest
from itsdangerous import URLSafeTimedSerializer
from starlette.responses import Response

from gateway.auth.keyring import new_session_key
from gateway.auth.sessions import MemorySessionStore, SessionRecord

from ._support import ALICE_PASSWORD, Env, header_values, login, tamper


async def start(env: Env, *, https: bool = False, user: str = "alice", method: str = "password") -> tuple[SessionRecord, str]:
    resp = Response()
    rec = await env.sessions.start(
        resp, user=user, email=f"{user}@example.com", groups=["employees"], auth_method=method, https=https
    )
    name = env.sessions.cookie_name(https)
    line = next(v for k, v in resp.raw_headers if k == b"set-cookie" and v.startswith(name.encode() + b"="))
    return rec, line.decode().split(";", 1)[0].split("=", 1)[1]


def resign(value: str, key: str, *, https: bool = False) -> str:
    """The same payload, signed with a key the gateway does not have."""
    payload = value.split(".", 1)[0]
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    ser = URLSafeTimedSerializer(
        key,
        salt=f"toolgate.session.v1.{'https' if https else 'http'}",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )
    return ser.dumps(data)


async def test_valid_cookie_resolves(env: Env) -> None:
    rec, cookie = await start(env)
    got, reason = await env.sessions.resolve(cookie, https=False)
    assert reason == "ok" and got is not None and got.session_id == rec.session_id


async def test_cookie_carries_only_id_subject_and_time(env: Env) -> None:
    import base64
    import json

    rec, cookie = await start(env)
    payload = cookie.split(".", 1)[0]
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert data == [rec.session_id, "alice", int(rec.created_at)]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda v: tamper(v), "bad_signature"),  # tampered signature
        (lambda v: ("W" if v[0] != "W" else "X") + v[1:], "bad_signature"),  # tampered payload
        (lambda v: v[: len(v) // 2], "bad_signature"),  # truncated
        (lambda v: v.split(".")[0], "bad_signature"),  # signature dropped
        (lambda v: "", "missing"),
        (lambda v: "a" * 5000, "bad_signature"),  # oversized
        (lambda v: "\u00ff\u0000.junk", "bad_signature"),
    ],
)
async def test_broken_cookies_are_refused(env: Env, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    _, cookie = await start(env)
    got, why = await env.sessions.resolve(mutate(cookie), https=False)
    assert got is None and why == reason


async def test_cookie_resigned_with_another_key_is_refused(env: Env) -> None:
    _, cookie = await start(env)
    forged = resign(cookie, new_session_key())
    got, why = await env.sessions.resolve(forged, https=False)
    assert got is None and why == "bad_signature"


async def test_payload_swapped_to_another_user_is_refused(env: Env) -> None:
    # Even with the right key, the store's record must belong to the cookie's subject.
    rec, _ = await start(env)
    key = env.session_keys.keys[0].decode()
    ser = URLSafeTimedSerializer(
        key, salt="toolgate.session.v1.http", signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256}
    )
    got, why = await env.sessions.resolve(ser.dumps([rec.session_id, "bob", int(rec.created_at)]), https=False)
    assert got is None and why == "unknown"
    got, why = await env.sessions.resolve(ser.dumps({"sid": rec.session_id}), https=False)
    assert got is None and why == "bad_signature"


async def test_idle_timeout(env: Env) -> None:
    _, cookie = await start(env)
    env.clock.advance(1799)
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"
    env.clock.advance(2)
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "expired_idle")


async def test_activity_extends_idle_but_not_absolute(env: Env) -> None:
    _, cookie = await start(env)
    reasons = []
    for _ in range(40):
        env.clock.advance(1500)  # under the idle timeout each time
        rec, reason = await env.sessions.resolve(cookie, https=False)
        reasons.append(reason)
        if rec is None:
            break
        await env.sessions.touch(rec)
    # 28 x 1500 s = 42000 s < 43200 s absolute; the 29th step is past it
    assert reasons == ["ok"] * 28 + ["expired_absolute"]


async def test_touch_is_throttled(env: Env) -> None:
    rec, _ = await start(env)
    env.clock.advance(10)
    assert (await env.sessions.touch(rec)).last_seen == rec.last_seen
    env.clock.advance(60)
    assert (await env.sessions.touch(rec)).last_seen == env.clock()


async def test_revoked_session_is_refused(env: Env) -> None:
    rec, cookie = await start(env)
    assert await env.sessions.revoke(rec.session_id, reason="admin", actor="sec-team")
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")
    event = env.emit.of("session.revoked")[-1]
    assert event["session_id"] == rec.session_id and event["reason"] == "admin"


async def test_revoke_user_ends_all_their_sessions(env: Env) -> None:
    _, c1 = await start(env)
    _, c2 = await start(env)
    _, cb = await start(env, user="bob")
    assert await env.sessions.revoke_user("alice") == 2
    assert (await env.sessions.resolve(c1, https=False))[1] == "revoked"
    assert (await env.sessions.resolve(c2, https=False))[1] == "revoked"
    assert (await env.sessions.resolve(cb, https=False))[1] == "ok"


async def test_password_change_through_users_file_ends_sessions(env: Env) -> None:
    _, cookie = await start(env)
    env.clock.advance(1)
    env.users.set_password("alice", "a-brand-new-passphrase-9")
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")
    assert env.emit.of("session.revoked")[-1]["reason"] == "sessions_invalidated"
    # sessions issued after the change work
    env.clock.advance(1)
    _, fresh = await start(env)
    assert (await env.sessions.resolve(fresh, https=False))[1] == "ok"


async def test_disable_through_users_file_ends_sessions(env: Env) -> None:
    _, cookie = await start(env)
    env.users.set_disabled("alice", True)
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")
    assert env.emit.of("session.revoked")[-1]["reason"] == "user_disabled"


async def test_revoking_a_non_local_subject(env: Env) -> None:
    _, cookie = await start(env, user="carol@example.com", method="oidc")
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"
    env.clock.advance(1)
    env.users.revoke_sessions("carol@example.com")
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")


async def test_password_session_of_removed_user_is_refused(env: Env) -> None:
    _, cookie = await start(env, user="zed")  # not in the users file
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")


async def test_group_edits_apply_to_live_password_sessions(env: Env) -> None:
    _, cookie = await start(env)
    env.users.set_groups("alice", ["auditors"])
    rec, _ = await env.sessions.resolve(cookie, https=False)
    assert rec is not None and rec.groups == ("auditors",)


async def test_unknown_session_id_is_refused(env: Env) -> None:
    _, cookie = await start(env)
    env.sessions.store = MemorySessionStore()  # as after a restart with the memory store
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "unknown")


async def test_key_rotation(env: Env) -> None:
    _, old_cookie = await start(env)
    old_key = env.session_keys.keys[0].decode()
    new_key = new_session_key()
    env.write_session_keys(new_key, old_key)
    # the old key still verifies
    assert (await env.sessions.resolve(old_cookie, https=False))[1] == "ok"
    rotated = env.emit.of("keys.rotated")
    assert rotated and rotated[-1]["details"]["ring"] == "session" and rotated[-1]["details"]["key_count"] == 2
    # the new key signs
    _, new_cookie = await start(env)
    ser_new = URLSafeTimedSerializer(
        new_key, salt="toolgate.session.v1.http", signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256}
    )
    assert ser_new.loads(new_cookie)[1] == "alice"
    # the removed key no longer verifies
    env.write_session_keys(new_key)
    assert (await env.sessions.resolve(old_cookie, https=False)) == (None, "bad_signature")
    assert (await env.sessions.resolve(new_cookie, https=False))[1] == "ok"


async def test_broken_key_file_keeps_last_good_ring(env: Env) -> None:
    _, cookie = await start(env)
    env.settings.session.keys_file.write_text("too-short\n")
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"


async def test_memory_store_sweep_and_bound() -> None:
    store = MemorySessionStore(max_sessions=2)

    def rec(sid: str, t: float) -> SessionRecord:
        return SessionRecord(sid, "u", "", (), "password", t, t, t + 100)

    await store.create(rec("a", 0))
    await store.create(rec("b", 50))
    await store.create(rec("c", 60))  # evicts the oldest
    assert await store.get("a") is None and await store.count() == 2
    assert await store.sweep(now=155, idle_timeout_s=1000) == 1  # b passed its absolute deadline (150)
    assert await store.sweep(now=158, idle_timeout_s=10) == 1  # c idle, before its deadline (160)
    assert await store.count() == 0


# ---------------------------------------------------------------- over HTTP


@pytest.mark.parametrize(
    "cookie_value",
    [
        "garbage",
        "a.b.c",
        "WyJ4Il0.AAAAAA.AAAA",
        "%00%ff",
        "\u00e9\u00e8",
        "x" * 5000,
        "",
    ],
)
async def test_bad_cookies_over_http_are_anonymous_and_cleared(env: Env, cookie_value: str) -> None:
    app = env.app()
    async with env.client(app=app) as c:
        resp = await c.get("/x", headers={"cookie": f"toolgate_session={cookie_value}".encode()})
        assert resp.status_code == 200
        assert resp.json()["user"] is None
        assert header_values(resp.json(), "x-gateway-user") == []
        if cookie_value:
            assert any("toolgate_session=" in v and "Max-Age=0" in v for v in resp.headers.get_list("set-cookie"))


async def test_expired_and_tampered_cookie_over_http(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        cookie = c.cookies["toolgate_session"]
        tampered = tamper(cookie)
        resp = await c.get("/x", headers={"cookie": f"toolgate_session={tampered}"})
        assert resp.json()["user"] is None and resp.json()["reason"] == "bad_signature"
        resp = await c.get("/x", headers={"cookie": f"toolgate_session={resign(cookie, new_session_key())}"})
        assert resp.json()["reason"] == "bad_signature"
        env.clock.advance(1801)
        resp = await c.get("/x", headers={"cookie": f"toolgate_session={cookie}"})
        assert resp.status_code == 200 and resp.json()["user"] is None and resp.json()["reason"] == "expired_idle"


async def test_users_file_changes_apply_to_sessions_already_resolved(env: Env) -> None:
    """The per-session memo of users-file checks must not outlive a change to the file."""
    _, cookie = await start(env)
    rec, why = await env.sessions.resolve(cookie, https=False)
    assert why == "ok" and "auditors" not in env.sessions.identity(rec).groups
    rec2, _ = await env.sessions.resolve(cookie, https=False)
    assert rec2 is rec, "a repeat request reuses the validated record"

    env.users.set_groups("alice", ["auditors"])
    rec3, _ = await env.sessions.resolve(cookie, https=False)
    assert rec3.groups == ("auditors",)
    assert env.sessions.identity(rec3).groups == frozenset({"auditors"})

    env.clock.advance(1)
    env.users.set_disabled("alice", True)
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")


async def test_revocation_applies_to_a_session_already_resolved(env: Env) -> None:
    record, cookie = await start(env)
    assert (await env.sessions.resolve(cookie, https=False))[1] == "ok"
    await env.sessions.store.revoke(record.session_id, reason="admin", now=env.clock())
    assert (await env.sessions.resolve(cookie, https=False)) == (None, "revoked")


# ------------------------------------------------------------ the Cookie header, split


def test_session_cookies_are_taken_out_of_the_headers_passed_inward() -> None:
    from gateway.middleware.session import _split_cookies

    headers = [
        (b"host", b"h"),
        (b"cookie", b'a=1; toolgate_session="sess"; __Host-toolgate_session=other; b=2'),
        (b"accept", b"*/*"),
        (b"cookie", b"toolgate_session=second"),  # HTTP/2 may split the header
    ]
    value, inward = _split_cookies(headers, "toolgate_session")
    assert value == "sess"  # the first one wins, quotes removed
    assert inward == [(b"host", b"h"), (b"cookie", b"a=1; b=2"), (b"accept", b"*/*")]
    value, inward = _split_cookies(headers, "__Host-toolgate_session")
    assert value == "other"
    assert inward == [(b"host", b"h"), (b"cookie", b"a=1; b=2"), (b"accept", b"*/*")]
    assert _split_cookies([(b"cookie", b"a=1")], "toolgate_session") == ("", None)
    # A name that merely contains ours is somebody else's cookie.
    assert _split_cookies([(b"cookie", b"xtoolgate_session=1")], "toolgate_session") == ("", [(b"cookie", b"xtoolgate_session=1")])


def test_only_a_matched_pair_of_quotes_is_removed() -> None:
    from gateway.middleware.session import _split_cookies

    def value(raw: bytes) -> str:
        return _split_cookies([(b"cookie", raw)], "toolgate_session")[0]

    assert value(b'toolgate_session="abc"') == "abc"
    assert value(b'toolgate_session= "abc" ') == "abc"
    # Anything else is the value as sent, which then fails verification
    # like any other altered cookie rather than being repaired into a valid one.
    assert value(b'toolgate_session="abc') == '"abc'
    assert value(b'toolgate_session=abc"') == 'abc"'
    assert value(b'toolgate_session=""abc""') == '"abc"'


def test_pre_session_cookies_are_kept_only_for_the_auth_routes() -> None:
    from gateway.middleware.session import _split_cookies

    raw = b"toolgate_csrf=n1; a=1; __Host-toolgate_oidc=st; toolgate_session=s; __Host-toolgate_csrf=n2; toolgate_oidc=o"
    value, inward = _split_cookies([(b"cookie", raw)], "toolgate_session")
    assert (value, inward) == ("s", [(b"cookie", b"a=1")])
    value, inward = _split_cookies([(b"cookie", raw)], "toolgate_session", to_auth=True)
    assert value == "s"
    assert inward == [(b"cookie", b"toolgate_csrf=n1; a=1; __Host-toolgate_oidc=st; __Host-toolgate_csrf=n2; toolgate_oidc=o")]
    # Only a pre-session cookie: the app gets no Cookie header at all.
    assert _split_cookies([(b"cookie", b"toolgate_csrf=n1")], "toolgate_session") == ("", [])


def test_cookie_header_parse_cache_is_bounded_and_exact() -> None:
    from gateway.middleware import session as mw

    cache = mw._PARSED[("toolgate_session", False)]
    cache.clear()
    for i in range(mw._PARSED_MAX + 10):
        raw = b"toolgate_session=s%d; keep=%d" % (i, i)
        assert mw._split_cookies([(b"cookie", raw)], "toolgate_session") == (f"s{i}", [(b"cookie", b"keep=%d" % i)])
        assert len(cache) <= mw._PARSED_MAX
    # Served from the cache, the answer is the same as parsed afresh.
    raw = b"toolgate_session=s3; keep=3"
    cache.clear()
    first = mw._split_cookies([(b"cookie", raw)], "toolgate_session")
    assert raw in cache
    assert mw._split_cookies([(b"cookie", bytes(raw))], "toolgate_session") == first
    # Oversize headers are parsed every time, never kept.
    big = b"toolgate_session=x; pad=" + b"p" * mw._PARSED_MAX_BYTES
    assert mw._split_cookies([(b"cookie", big)], "toolgate_session")[0] == "x"
    assert big not in cache
