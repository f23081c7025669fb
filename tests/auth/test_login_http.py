"""Sign-in, sign-out and whoami through the real middleware and routes."""

from __future__ import annotations

import re

import httpx
import pytest

from ._support import ALICE_PASSWORD, BOB_PASSWORD, Env, csrf_from, header_values, login, make_env, tamper


def set_cookie_lines(resp: httpx.Response) -> list[str]:
    return resp.headers.get_list("set-cookie")


def session_cookie_line(resp: httpx.Response, name: str) -> str:
    lines = [c for c in set_cookie_lines(resp) if c.startswith(name + "=")]
    assert len(lines) == 1, set_cookie_lines(resp)
    return lines[0]


async def test_sign_in_sets_hardened_cookie_and_identity(env: Env) -> None:
    async with env.client() as c:
        resp = await login(c, "alice", ALICE_PASSWORD, next_path="/sales")
        assert resp.status_code == 303
        assert resp.headers["location"] == "/sales"
        line = session_cookie_line(resp, "toolgate_session")
        attrs = [a.strip().lower() for a in line.split(";")[1:]]
        assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
        assert "secure" not in attrs and not any(a.startswith("domain") for a in attrs)

        who = await c.get("/api/whoami")
        assert who.status_code == 200
        body = who.json()
        assert body["user"] == "alice"
        assert body["email"] == "alice@example.com"
        assert body["groups"] == ["employees", "security"]
        assert body["auth_method"] == "password"
        assert body["expires_at"] == pytest.approx(env.clock() + 1800, abs=1)

        inner = (await c.get("/anything")).json()
        assert header_values(inner, "x-gateway-user") == ["alice"]
        assert header_values(inner, "x-gateway-email") == ["alice@example.com"]
        assert header_values(inner, "x-gateway-groups") == ["employees,security"]
        # the session cookie itself never reaches the tools
        assert not any("toolgate_session" in v for v in header_values(inner, "cookie"))

    login_events = env.emit.of("auth.login")
    assert login_events[-1]["outcome"] == "success"
    assert login_events[-1]["auth_method"] == "password"
    assert login_events[-1]["user"] == "alice"
    assert login_events[-1]["session_id"]
    assert all("password" not in k for e in env.emit.events for k in e if k != "auth_method")


async def test_https_uses_host_prefixed_secure_cookie(env: Env) -> None:
    async with env.client(https=True) as c:
        resp = await login(c, "alice", ALICE_PASSWORD)
        assert resp.status_code == 303
        line = session_cookie_line(resp, "__Host-toolgate_session")
        attrs = [a.strip().lower() for a in line.split(";")[1:]]
        assert "secure" in attrs and "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
        assert not any(a.startswith("domain") for a in attrs)
        assert any(c.startswith("__Host-toolgate_csrf=") for c in set_cookie_lines(await c.get("/auth/login", headers={"cookie": ""})))
        assert (await c.get("/api/whoami")).json()["user"] == "alice"


async def test_https_ignores_plain_cookie_name(env: Env) -> None:
    # A valid http-flavour cookie planted on an https request is not a session.
    async with env.client() as plain:
        await login(plain, "alice", ALICE_PASSWORD)
        value = plain.cookies["toolgate_session"]
    async with env.client(https=True) as c:
        inner = (await c.get("/x", headers={"cookie": f"toolgate_session={value}"})).json()
        assert inner["user"] is None
        # renamed to the https name it fails too: the signature is scheme-bound
        inner = (await c.get("/x", headers={"cookie": f"__Host-toolgate_session={value}"})).json()
        assert inner["user"] is None and inner["reason"] == "bad_signature"
    # and a genuine https session cookie under the plain name is not read on https
    async with env.client(https=True) as c:
        await login(c, "alice", ALICE_PASSWORD)
        host_value = c.cookies["__Host-toolgate_session"]
        c.cookies.clear()
        inner = (await c.get("/x", headers={"cookie": f"toolgate_session={host_value}"})).json()
        assert inner["user"] is None and inner["reason"] == "missing"


async def test_wrong_password_and_unknown_user_get_the_same_answer(env: Env) -> None:
    async with env.client() as c:
        wrong = await login(c, "alice", "not-the-password-at-all")
        unknown = await login(c, "mallory", "not-the-password-at-all")
        disabled_like = await login(c, "ALICE", "still-not-the-password")
    for r in (wrong, unknown, disabled_like):
        assert r.status_code == 401
        assert "Wrong username or password." in r.text
        assert "toolgate_session" not in r.headers.get("set-cookie", "")
    strip = lambda t: re.sub(r'value="[^"]*"|<code>[^<]*</code>', "", t)  # noqa: E731
    assert strip(wrong.text).replace("alice", "X") == strip(unknown.text).replace("mallory", "X")
    failures = [e for e in env.emit.of("auth.login") if e["outcome"] == "failure"]
    assert [e["reason"] for e in failures] == ["invalid_credentials"] * 3


async def test_username_is_case_insensitive(env: Env) -> None:
    async with env.client() as c:
        assert (await login(c, "Alice", ALICE_PASSWORD)).status_code == 303
        assert (await c.get("/api/whoami")).json()["user"] == "alice"


@pytest.mark.parametrize("token", ["", "missing", "forged", "other-cookie"])
async def test_login_csrf_is_enforced(env: Env, token: str) -> None:
    async with env.client() as c:
        page = await c.get("/auth/login")
        good = csrf_from(page.text)
        if token == "other-cookie":
            # A token from another browser (another csrf cookie) does not fit ours.
            async with env.client() as other:
                submitted = csrf_from((await other.get("/auth/login")).text)
        elif token == "forged":
            submitted = tamper(good)
        else:
            submitted = token
        data = {"username": "alice", "password": ALICE_PASSWORD, "next": "/"}
        if token != "missing":
            data["csrf_token"] = submitted
        resp = await c.post("/auth/login", data=data)
        assert resp.status_code == 403
        assert "toolgate_session" not in resp.headers.get("set-cookie", "")
        assert (await c.get("/api/whoami")).status_code == 401
    assert env.emit.of("auth.login")[-1]["reason"] == "csrf"


async def test_login_without_csrf_cookie_is_refused(env: Env) -> None:
    async with env.client() as c:
        token = csrf_from((await c.get("/auth/login")).text)
        c.cookies.clear()
        resp = await c.post("/auth/login", data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token})
        assert resp.status_code == 403


async def test_cross_origin_post_is_refused(env: Env) -> None:
    async with env.client() as c:
        token = csrf_from((await c.get("/auth/login")).text)
        resp = await c.post(
            "/auth/login",
            data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token},
            headers={"origin": "https://evil.example"},
        )
        assert resp.status_code == 403


async def test_sign_out_kills_the_old_cookie(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        old = c.cookies["toolgate_session"]
        page = await c.get("/auth/logout")
        assert page.status_code == 200 and "Sign out" in page.text
        out = await c.post("/auth/logout", data={"csrf_token": csrf_from(page.text)})
        assert out.status_code == 303
        assert out.headers["location"].startswith("/auth/login")
        assert any(
            line.startswith("toolgate_session=") and "max-age=0" in line.lower() for line in set_cookie_lines(out)
        )
        assert (await c.get("/api/whoami")).status_code == 401
    # replaying the cookie captured before sign-out does not work
    async with env.client() as replay:
        resp = await replay.get("/x", headers={"cookie": f"toolgate_session={old}"})
        assert resp.json()["user"] is None and resp.json()["reason"] == "revoked"
    logout = env.emit.of("auth.logout")
    assert logout and logout[-1]["user"] == "alice" and logout[-1]["outcome"] == "success"


async def test_logout_needs_csrf(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        resp = await c.post("/auth/logout", data={})
        assert resp.status_code == 403
        assert (await c.get("/api/whoami")).json()["user"] == "alice"


async def test_whoami_anonymous_is_401_json(env: Env) -> None:
    async with env.client() as c:
        resp = await c.get("/api/whoami")
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["error"]["status"] == 401


async def test_login_page_has_no_inline_script_and_strict_csp(env: Env) -> None:
    async with env.client() as c:
        resp = await c.get("/auth/login", params={"next": "/ops"})
        assert resp.status_code == 200
        assert "<script" not in resp.text.lower() and "style=" not in resp.text.lower()
        assert "script-src" not in resp.headers["content-security-policy"]
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        assert 'name="next" value="/ops"' in resp.text
        assert resp.headers["cache-control"] == "no-store"
        assert "Sign in with" not in resp.text


async def test_login_page_offers_oidc_when_configured(tmp_path, users_template) -> None:  # type: ignore[no-untyped-def]
    env = make_env(tmp_path, users_template, oidc=True)
    async with env.client() as c:
        resp = await c.get("/auth/login", params={"next": "/ops?tab=1"})
        assert "Sign in with Example SSO" in resp.text
        assert 'href="/auth/oidc/start?next=%2Fops%3Ftab%3D1"' in resp.text


async def test_expired_session_shows_notice(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        env.clock.advance(1801)
        page = await c.get("/auth/login")
        assert "inactivity" in page.text
        # after a redirect that cleared the cookie, the reason comes as a parameter
        c.cookies.clear()
        page = await c.get("/auth/login", params={"reason": "revoked"})
        assert "Your session has ended" in page.text
        page = await c.get("/auth/login", params={"reason": "<b>x</b>"})
        assert "<b>x</b>" not in page.text and 'class="notice"' not in page.text


async def test_second_sign_in_replaces_the_first_session(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        first = c.cookies["toolgate_session"]
        # a signed-in user visiting the form is sent on
        assert (await c.get("/auth/login")).status_code == 303
        c.cookies.clear()
        c.cookies.set("toolgate_session", first, domain="gw.test")
        page = await c.get("/auth/logout")  # fetch a csrf token and cookie
        token = csrf_from(page.text)
        resp = await c.post("/auth/login", data={"username": "bob", "password": BOB_PASSWORD, "csrf_token": token})
        assert resp.status_code == 303
    async with env.client() as replay:
        assert (await replay.get("/x", headers={"cookie": f"toolgate_session={first}"})).json()["user"] is None


async def test_origin_null_from_no_referrer_pages_is_accepted(env: Env) -> None:
    # Browsers send "Origin: null" for form posts under Referrer-Policy: no-referrer
    # (found with Chromium against this page); the CSRF token decides then.
    async with env.client() as c:
        token = csrf_from((await c.get("/auth/login")).text)
        resp = await c.post(
            "/auth/login",
            data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token},
            headers={"origin": "null"},
        )
        assert resp.status_code == 303
        same = await c.post("/auth/logout", data={"csrf_token": token}, headers={"origin": "http://gw.test"})
        assert same.status_code == 303
