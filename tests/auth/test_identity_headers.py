"""Spoofed identity headers never reach the inner app, over http or websocket."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.context import Identity
from gateway.middleware.authentication import WELL_KNOWN_IDENTITY_HEADERS

from ._support import ALICE_PASSWORD, Env, header_values, login

SPOOFED = [
    ("X-Gateway-User", "admin"),
    ("X-Gateway-Email", "admin@example.com"),
    ("X-Gateway-Groups", "security,admins"),
    ("X-Gateway-Anything", "1"),
    ("x-GATEWAY-user", "admin2"),
    *[(h, "admin") for h in WELL_KNOWN_IDENTITY_HEADERS],
]


def spoofed_names() -> set[str]:
    return {k.lower() for k, _ in SPOOFED}


def assert_clean(body: dict, expected_user: str | None) -> None:  # type: ignore[type-arg]
    names = [k for k, _ in body["headers"]]
    leaked = [n for n in names if n in spoofed_names() and not n.startswith("x-gateway-")]
    assert leaked == []
    values = [v for _, v in body["headers"]]
    assert "admin" not in values and "admin2" not in values and "security,admins" not in values
    if expected_user is None:
        assert not any(n.startswith("x-gateway-") for n in names)
    else:
        assert header_values(body, "x-gateway-user") == [expected_user]
        assert [n for n in names if n.startswith("x-gateway-")] == ["x-gateway-user", "x-gateway-email", "x-gateway-groups", "x-gateway-auth-method", "x-gateway-session-expires"]


async def test_anonymous_spoofing_over_http(env: Env) -> None:
    async with env.client() as c:
        body = (await c.get("/page", headers=SPOOFED)).json()
    assert body["user"] is None
    assert_clean(body, None)


async def test_signed_in_spoofing_over_http(env: Env) -> None:
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        body = (await c.get("/page", headers=SPOOFED)).json()
    assert_clean(body, "alice")
    assert header_values(body, "x-gateway-groups") == ["employees,security"]


async def test_the_gateway_s_cookies_never_reach_the_app(env: Env) -> None:
    # The session cookie, and the sign-in flows' CSRF and OIDC cookies: only
    # the gateway's /auth/* routes read those, and st.context.cookies would
    # show them to every tool.
    async with env.client() as c:
        await login(c, "alice", ALICE_PASSWORD)
        assert "toolgate_csrf" in c.cookies and "toolgate_session" in c.cookies
        c.cookies.set("toolgate_oidc", "state-blob")
        c.cookies.set("theme", "dark")
        body = (await c.get("/page")).json()
    assert body["user"] == "alice"
    sent = "; ".join(header_values(body, "cookie"))
    assert "toolgate_" not in sent
    assert "theme=dark" in sent


def test_spoofing_over_websocket(env: Env) -> None:
    with TestClient(env.app()) as client:
        with client.websocket_connect("/ws", headers=dict(SPOOFED)) as ws:
            body = ws.receive_json()
        assert body["user"] is None
        assert_clean(body, None)

        page = client.get("/auth/login")
        import re

        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        resp = client.post(
            "/auth/login",
            data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert resp.status_code == 303
        with client.websocket_connect("/ws", headers=dict(SPOOFED)) as ws:
            body = ws.receive_json()
        assert body["user"] == "alice"
        assert_clean(body, "alice")
        assert not any("toolgate_session" in v for v in header_values(body, "cookie"))


class UpstreamDown(Exception):
    reason = "jwks_unavailable"


class FakeUpstream:
    """Stands in for the upstream verifier (its duck type): accepts exactly one value."""

    header = "X-Proxy-Assertion"

    async def verify(self, token: str) -> Identity:
        if token == "provider-down":
            raise UpstreamDown()
        if token != "good-assertion":
            raise ValueError("bad assertion")
        return Identity(user="proxy-user", email="p@example.com", groups=frozenset({"employees"}), auth_method="upstream")


async def test_upstream_assertion_is_used_and_stripped(env: Env) -> None:
    app = env.app(upstream=FakeUpstream())
    async with env.client(app=app) as c:
        body = (await c.get("/x", headers={"x-proxy-assertion": "good-assertion", "x-gateway-user": "admin"})).json()
        assert body["user"] == "proxy-user" and body["auth_method"] == "upstream"
        assert header_values(body, "x-proxy-assertion") == []
        assert header_values(body, "x-gateway-user") == ["proxy-user"]
        bad = await c.get("/x", headers={"x-proxy-assertion": "forged"})
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "invalid_assertion"
        down = await c.get("/x", headers={"x-proxy-assertion": "provider-down"})
        assert down.status_code == 503 and down.json()["error"]["code"] == "upstream_unavailable"


async def test_unsafe_identity_values_cannot_split_headers(env: Env) -> None:
    resp = Response()
    await env.sessions.start(
        resp, user="alice", email="a@example.com\r\nx-gateway-user: admin", groups=["ok", "a,b"], auth_method="oidc", https=False
    )
    cookie = resp.headers["set-cookie"].split(";", 1)[0]
    async with env.client() as c:
        body = (await c.get("/x", headers={"cookie": cookie})).json()
    assert header_values(body, "x-gateway-user") == ["alice"]
    assert header_values(body, "x-gateway-groups") == ["ok"]
    assert "\r" not in header_values(body, "x-gateway-email")[0]


@pytest.mark.parametrize("close_code", [4401])
def test_websocket_closes_when_session_is_revoked(env: Env, close_code: int) -> None:
    import re

    with TestClient(env.app(recheck_interval_s=5)) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/auth/login").text).group(1)  # type: ignore[union-attr]
        client.post("/auth/login", data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token})
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["user"] == "alice"
            ws.send_text("hi")
            assert ws.receive_text() == "echo:hi"
            # The CLI's way: the users file.
            _revoke_then_expect_close(env, ws, lambda: env.users.set_password("alice", "a-brand-new-passphrase-9"), close_code)


def _revoke_then_expect_close(env: Env, ws: Any, revoke: Callable[[], Any], code: int = 4401) -> None:
    """Revoked mid-connection: the socket lives out the re-check interval (5 s), then closes."""
    env.clock.advance(1)
    revoke()
    ws.send_text("within the re-check interval")
    assert ws.receive_text().startswith("echo:")
    env.clock.advance(6)
    ws.send_text("after it")
    with pytest.raises(WebSocketDisconnect) as exc:
        ws.receive_text()
    assert exc.value.code == code


def _feed_token(env: Env) -> tuple[str, dict[str, Any]]:
    from gateway.auth.tokens import mint_token

    return mint_token(env.token_keys, subject="svc-feed", groups=["employees"], ttl_s=3600, issuer="toolgate",
                      audience="toolgate-api", max_ttl_s=86400, clock=env.clock)  # fmt: skip


@pytest.mark.parametrize("by", ["subject", "jti"])
def test_token_websocket_closes_when_its_token_is_revoked(env: Env, by: str) -> None:
    token, claims = _feed_token(env)
    with TestClient(env.app(recheck_interval_s=5)) as client:
        with client.websocket_connect("/ws", headers={"authorization": f"Bearer {token}"}) as ws:
            assert ws.receive_json()["user"] == "svc-feed"
            if by == "subject":
                _revoke_then_expect_close(env, ws, lambda: env.users.revoke_sessions("svc-feed"))  # `gateway users revoke svc-feed`
            else:
                _revoke_then_expect_close(env, ws, lambda: env.users.revoke_token(claims["jti"], until=claims["exp"]))


def test_token_websocket_of_an_unrevoked_subject_stays_open(env: Env) -> None:
    token, _ = _feed_token(env)
    with TestClient(env.app(recheck_interval_s=5)) as client:
        with client.websocket_connect("/ws", headers={"authorization": f"Bearer {token}"}) as ws:
            ws.receive_json()
            env.users.revoke_sessions("someone-else")
            env.users.revoke_token("some-other-token", until=env.clock() + 3600)
            for _ in range(3):
                env.clock.advance(6)
                ws.send_text("still here")
                assert ws.receive_text() == "echo:still here"


def test_websocket_closes_when_session_expires(env: Env) -> None:
    import re

    with TestClient(env.app()) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/auth/login").text).group(1)  # type: ignore[union-attr]
        client.post("/auth/login", data={"username": "alice", "password": ALICE_PASSWORD, "csrf_token": token})
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            env.clock.advance(1801)
            ws.send_text("still there?")
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_text()
            assert exc.value.code == 4401


def test_websocket_with_bad_bearer_is_refused(env: Env) -> None:
    with TestClient(env.app()) as client:
        with pytest.raises(WebSocketDisconnect) as exc:
            with client.websocket_connect("/ws", headers={"authorization": "Bearer not-a-token"}):
                pass
        assert exc.value.code == 1008
