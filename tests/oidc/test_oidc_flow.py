"""End to end: the gateway's OIDC routes + the real SessionManager against a
real OpenID provider (oidc-provider under node).  Nothing on the provider side
is mocked: discovery, the login and consent pages, the token endpoint, JWKS
and userinfo are all oidc-provider's own."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.applications import Starlette

from gateway.auth import oidc
from gateway.auth.keyring import KeyRing, new_session_key
from gateway.auth.oidc import OIDCClient
from gateway.auth.oidc_routes import FLOW_SALT, oidc_routes
from gateway.auth.sessions import MemorySessionStore, SessionManager, SessionRecord
from gateway.auth.users import UserDirectory
from gateway.settings import OIDCSettings, SessionSettings
from tests.oidc.harness import GATEWAY_URL, AuditRecorder, Browser, FakeIdP, Provider, query

SCOPES = ("openid", "email", "profile", "groups")
FLOW_COOKIE = "toolgate_oidc"
SESSION_COOKIE = "toolgate_session"


@dataclass
class Gateway:
    """The pieces a test composes into an app; the session layer is the real one."""

    keys_file: Path
    ring: KeyRing
    sessions: SessionManager
    audit: AuditRecorder

    def app(
        self,
        issuer: str,
        *,
        client_id: str = "toolgate",
        secret: str = "toolgate-test-secret",
        token_auth_method: str = "auto",
        public_url: str = GATEWAY_URL,
    ) -> Starlette:
        settings = OIDCSettings(issuer=issuer, client_id=client_id, client_secret=secret, scopes=SCOPES)
        client = OIDCClient(
            settings, redirect_uri=public_url + "/auth/callback", token_auth_method=token_auth_method
        )
        routes = oidc_routes(
            settings=settings,
            public_url=public_url,
            sessions=self.sessions,
            emit=self.audit,
            signing_keys=self.ring,
            client=client,
        )
        return Starlette(routes=routes)

    def flow_serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            list(reversed(self.ring.keys)),
            salt=FLOW_SALT,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )

    async def session_of(self, browser: Browser) -> SessionRecord | None:
        value = browser.gw.cookies.get(SESSION_COOKIE)
        record, _why = await self.sessions.resolve(value or "", https=False)
        return record

    def last_login(self) -> dict[str, Any]:
        logins = self.audit.logins()
        assert logins, "no auth.login event"
        return logins[-1]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    keys_file = tmp_path / "session.keys"
    keys_file.write_text(new_session_key() + "\n")
    keys_file.chmod(0o600)
    users_file = tmp_path / "users.toml"
    users_file.write_text("")
    ring = KeyRing(keys_file, check_interval_s=0.0)
    audit = AuditRecorder()
    sessions = SessionManager(
        SessionSettings(keys_file=keys_file),
        MemorySessionStore(),
        ring,
        users=UserDirectory(users_file, warm=False),
        emit=audit,
    )
    return Gateway(keys_file, ring, sessions, audit)


@pytest.fixture
async def browser(gateway: Gateway, provider: Provider) -> AsyncIterator[Browser]:
    b = Browser(gateway.app(provider.issuer))
    yield b
    await b.aclose()


def assert_failed(resp: httpx.Response, gateway: Gateway, reason: str, status: int) -> None:
    assert resp.status_code == status, resp.text[:300]
    assert "text/html" in resp.headers["content-type"]
    assert "Traceback" not in resp.text and "/work/" not in resp.text
    assert 'href="/auth/login"' in resp.text  # a way back to sign in
    event = gateway.last_login()
    assert event["outcome"] == "failure"
    assert event["reason"] == reason
    assert event["auth_method"] == "oidc"
    assert SESSION_COOKIE not in resp.headers.get("set-cookie", "")


# ---------------------------------------------------------------- the happy path


async def test_code_flow_signs_in(browser: Browser, gateway: Gateway, provider: Provider) -> None:
    start = await browser.start("/sales?tab=1")
    assert start.status_code == 302
    location = start.headers["location"]
    assert location.startswith(provider.issuer + "/auth?")
    q = query(location)
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43 and q["state"] != q["nonce"]
    assert q["redirect_uri"] == GATEWAY_URL + "/auth/callback"
    assert q["scope"] == " ".join(SCOPES)
    cookie = start.headers["set-cookie"].lower()
    assert cookie.startswith(FLOW_COOKIE + "=")
    for attr in ("httponly", "samesite=lax", "max-age=600", "path=/"):
        assert attr in cookie
    assert "secure" not in cookie  # plain http public_url

    callback_url = await browser.authorize(location)
    cb = query(callback_url)
    assert cb["state"] == q["state"] and cb["iss"] == provider.issuer
    resp = await browser.callback(callback_url)

    assert resp.status_code == 303
    assert resp.headers["location"] == "/sales?tab=1"
    assert resp.headers["cache-control"] == "no-store"
    assert FLOW_COOKIE not in browser.gw.cookies  # single use: deleted
    record = await gateway.session_of(browser)
    assert record is not None
    assert (record.user, record.email, record.groups, record.auth_method) == (
        "alice",
        "alice@example.com",
        ("employees",),
        "oidc",
    )
    assert record.client_ip == "127.0.0.1"
    event = gateway.last_login()
    assert event["outcome"] == "success"
    assert event["user"] == "alice" and event["groups"] == ["employees"]
    assert event["email"] == "alice@example.com" and event["auth_method"] == "oidc"
    assert event["session_id"] == record.session_id
    assert event["details"] == {"issuer": provider.issuer, "sub": "alice"}
    # The audit trail never holds the code, the PKCE verifier or a token.
    assert cb["code"] not in repr(gateway.audit.events)


@pytest.mark.parametrize(
    "client_id, secret, method",
    [
        ("toolgate-post", "toolgate-post-secret", "client_secret_post"),
        ("toolgate-public", "", "auto"),  # public client: PKCE only
        ("toolgate-es256", "toolgate-es256-secret", "auto"),  # ES256-signed ID token
    ],
)
async def test_other_clients(gateway: Gateway, provider: Provider, client_id: str, secret: str, method: str) -> None:
    b = Browser(gateway.app(provider.issuer, client_id=client_id, secret=secret, token_auth_method=method))
    try:
        _, resp = await b.sign_in(next_path="/ops")
        assert resp.status_code == 303 and resp.headers["location"] == "/ops"
        record = await gateway.session_of(b)
        assert record is not None and record.user == "alice" and record.groups == ("employees",)
    finally:
        await b.aclose()


async def test_wrong_client_secret_is_a_token_error(gateway: Gateway, provider: Provider) -> None:
    b = Browser(gateway.app(provider.issuer, secret="not-the-secret"))
    try:
        _, resp = await b.sign_in()
        assert_failed(resp, gateway, oidc.TOKEN_ERROR, 401)
        assert gateway.last_login()["details"]["error"] == "invalid_client"
    finally:
        await b.aclose()


async def test_claim_mapping(gateway: Gateway, provider: Provider) -> None:
    # bob: email_verified false, groups as one "employees, ops" string.
    b = Browser(gateway.app(provider.issuer))
    try:
        _, resp = await b.sign_in(login="bob")
        assert resp.status_code == 303
        record = await gateway.session_of(b)
        assert record is not None
        assert (record.user, record.email, record.groups) == ("bob", "", ("employees", "ops"))
    finally:
        await b.aclose()
    # carol: no preferred_username, so the user is her `sub`.
    b = Browser(gateway.app(provider.issuer))
    try:
        _, resp = await b.sign_in(login="carol")
        record = await gateway.session_of(b)
        assert record is not None and (record.user, record.groups) == ("carol", ("security",))
    finally:
        await b.aclose()


async def test_claims_from_userinfo_when_the_id_token_lacks_them(gateway: Gateway, conform_provider: Provider) -> None:
    b = Browser(gateway.app(conform_provider.issuer))
    try:
        _, resp = await b.sign_in()
        assert resp.status_code == 303
        record = await gateway.session_of(b)
        assert record is not None
        assert (record.user, record.email, record.groups) == ("alice", "alice@example.com", ("employees",))
    finally:
        await b.aclose()


# ---------------------------------------------------------------- state, replay, nonce


async def test_wrong_state_fails(browser: Browser, gateway: Gateway) -> None:
    start = await browser.start()
    callback_url = await browser.authorize(start.headers["location"])
    params = query(callback_url)
    params["state"] = params["state"][:-2] + ("AA" if not params["state"].endswith("AA") else "BB")
    resp = await browser.gw.get("/auth/callback?" + urlencode(params))
    assert_failed(resp, gateway, oidc.BAD_STATE, 400)
    assert await gateway.session_of(browser) is None
    assert FLOW_COOKIE not in browser.gw.cookies  # the failed flow is over


async def test_callback_in_another_browser_fails(gateway: Gateway, provider: Provider, browser: Browser) -> None:
    """Login CSRF: a victim's browser handed the attacker's callback URL has no flow cookie."""
    start = await browser.start()
    callback_url = await browser.authorize(start.headers["location"])
    victim = Browser(gateway.app(provider.issuer))
    try:
        resp = await victim.callback(callback_url)
        assert_failed(resp, gateway, oidc.BAD_STATE, 400)
        assert await gateway.session_of(victim) is None
    finally:
        await victim.aclose()


async def test_replayed_callback_fails(browser: Browser, gateway: Gateway) -> None:
    start = await browser.start()
    flow_cookie = browser.gw.cookies[FLOW_COOKIE]
    callback_url = await browser.authorize(start.headers["location"])
    assert (await browser.callback(callback_url)).status_code == 303

    # The same browser again: its flow cookie is gone.
    resp = await browser.callback(callback_url)
    assert_failed(resp, gateway, oidc.BAD_STATE, 400)
    # An attacker who kept the flow cookie and the URL: the flow is spent.
    browser.gw.cookies.set(FLOW_COOKIE, flow_cookie, domain="127.0.0.1")
    resp = await browser.callback(callback_url)
    assert_failed(resp, gateway, oidc.REPLAYED_CODE, 400)
    assert len([e for e in gateway.audit.logins() if e["outcome"] == "success"]) == 1


async def test_replayed_code_is_refused_by_the_provider(gateway: Gateway, provider: Provider) -> None:
    """Even a gateway that forgot the spent flow (a restart) cannot redeem a code twice."""
    first = Browser(gateway.app(provider.issuer))
    try:
        start = await first.start()
        flow_cookie = first.gw.cookies[FLOW_COOKIE]
        callback_url = await first.authorize(start.headers["location"])
        assert (await first.callback(callback_url)).status_code == 303
    finally:
        await first.aclose()
    restarted = Browser(gateway.app(provider.issuer))  # fresh memory of spent flows, same keys
    try:
        restarted.gw.cookies.set(FLOW_COOKIE, flow_cookie, domain="127.0.0.1")
        resp = await restarted.callback(callback_url)
        assert_failed(resp, gateway, oidc.TOKEN_ERROR, 401)
        assert gateway.last_login()["details"]["error"] == "invalid_grant"
        assert await gateway.session_of(restarted) is None
    finally:
        await restarted.aclose()


async def test_bad_nonce_fails(browser: Browser, gateway: Gateway) -> None:
    """The flow cookie re-signed with another nonce: the ID token no longer matches."""
    start = await browser.start()
    ser = gateway.flow_serializer()
    flow = ser.loads(browser.gw.cookies[FLOW_COOKIE])
    flow["n"] = "another-flows-nonce"
    browser.gw.cookies.set(FLOW_COOKIE, ser.dumps(flow), domain="127.0.0.1")
    callback_url = await browser.authorize(start.headers["location"])
    resp = await browser.callback(callback_url)
    assert_failed(resp, gateway, oidc.BAD_NONCE, 401)
    assert await gateway.session_of(browser) is None


async def test_forged_flow_cookie_fails(browser: Browser, gateway: Gateway) -> None:
    start = await browser.start()
    forged = URLSafeTimedSerializer(b"not-our-key-" * 4, salt=FLOW_SALT).dumps(
        {"s": query(start.headers["location"])["state"], "n": "x", "v": "y", "x": "/"}
    )
    browser.gw.cookies.set(FLOW_COOKIE, forged, domain="127.0.0.1")
    resp = await browser.callback(await browser.authorize(start.headers["location"]))
    assert_failed(resp, gateway, oidc.BAD_STATE, 400)


async def test_expired_flow_cookie_fails(browser: Browser, gateway: Gateway) -> None:
    start = await browser.start()
    flow = gateway.flow_serializer().loads(browser.gw.cookies[FLOW_COOKIE])

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 11 * 60

    old = URLSafeTimedSerializer(
        list(reversed(gateway.ring.keys)),
        salt=FLOW_SALT,
        signer=Earlier,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    ).dumps(flow)
    browser.gw.cookies.set(FLOW_COOKIE, old, domain="127.0.0.1")
    resp = await browser.callback(await browser.authorize(start.headers["location"]))
    assert_failed(resp, gateway, oidc.BAD_STATE, 400)


async def test_flow_survives_key_rotation(browser: Browser, gateway: Gateway) -> None:
    """A flow started before a rotation completes after it (old keys still verify)."""
    start = await browser.start()
    old = gateway.keys_file.read_text()
    gateway.keys_file.write_text(new_session_key() + "\n" + old)
    callback_url = await browser.authorize(start.headers["location"])
    resp = await browser.callback(callback_url)
    assert resp.status_code == 303
    assert len(gateway.ring.keys) == 2


async def test_mixed_up_issuer_in_callback_fails(browser: Browser, gateway: Gateway) -> None:
    """RFC 9207: a callback whose `iss` names another provider is refused."""
    start = await browser.start()
    params = query(await browser.authorize(start.headers["location"]))
    params["iss"] = "https://evil.example"
    resp = await browser.gw.get("/auth/callback?" + urlencode(params))
    assert_failed(resp, gateway, oidc.BAD_ISSUER, 503)


async def test_user_cancels_at_the_provider(browser: Browser, gateway: Gateway) -> None:
    start = await browser.start()
    callback_url = await browser.authorize(start.headers["location"], abort=True)
    assert query(callback_url)["error"] == "access_denied"
    resp = await browser.callback(callback_url)
    assert_failed(resp, gateway, oidc.PROVIDER_ERROR, 401)
    assert gateway.last_login()["details"]["error"] == "access_denied"


# ---------------------------------------------------------------- next


@pytest.mark.parametrize(
    "next_path",
    ["//evil.example/", "/\\evil.example", "https://evil.example/", "/\t/evil.example", "javascript:alert(1)"],
)
async def test_open_redirects_stay_on_site(browser: Browser, gateway: Gateway, next_path: str) -> None:
    _, resp = await browser.sign_in(next_path=next_path)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/"


async def test_missing_next_goes_home(browser: Browser) -> None:
    _, resp = await browser.sign_in(next_path=None)
    assert resp.headers["location"] == "/"


# ---------------------------------------------------------------- https and provider trouble


async def test_https_flow_cookie(gateway: Gateway, provider: Provider) -> None:
    app = gateway.app(provider.issuer, public_url="https://127.0.0.1:8501")
    b = Browser(app, base_url="https://127.0.0.1:8501")
    try:
        start = await b.start()
        cookie = start.headers["set-cookie"]
        assert cookie.startswith("__Host-toolgate_oidc=")
        lowered = cookie.lower()
        assert "secure" in lowered and "path=/" in lowered and "domain" not in lowered
        assert query(start.headers["location"])["redirect_uri"] == "https://127.0.0.1:8501/auth/callback"
    finally:
        await b.aclose()


async def test_issuer_mismatch_in_discovery_stops_sign_in(gateway: Gateway, fake_idp: FakeIdP) -> None:
    fake_idp.issuer = "https://evil.example"
    b = Browser(gateway.app(fake_idp.url))
    try:
        resp = await b.start()
        assert_failed(resp, gateway, oidc.BAD_ISSUER, 503)
        assert FLOW_COOKIE not in b.gw.cookies
    finally:
        await b.aclose()


async def test_unreachable_provider_is_a_clear_error(gateway: Gateway) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = Browser(gateway.app(f"http://127.0.0.1:{port}"))
    try:
        resp = await b.start()
        assert_failed(resp, gateway, oidc.PROVIDER_UNREACHABLE, 503)
        assert "cannot be reached" in resp.text
    finally:
        await b.aclose()


async def test_api_clients_get_json_errors(browser: Browser, gateway: Gateway) -> None:
    resp = await browser.gw.get("/auth/callback?state=x&code=y", headers={"accept": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["status"] == 400
    assert urlsplit(str(resp.url)).path == "/auth/callback"
