"""``/ws/security-feed`` through the whole chain of a real gateway, and the checks an open socket keeps making."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from starlette.responses import Response
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gateway.auth.users import UserDirectory
from gateway.context import RequestContext
from gateway.live.feature import WS_FORBIDDEN, WS_SESSION_ENDED, LiveFeedFeature
from gateway.services import build_services
from gateway.settings import load_settings
from tests.app.conftest import USERS, Gateway, add_users, running_gateway
from tests.helpers import make_config_dir

pytestmark = pytest.mark.slow

# Policy that (wrongly) opens the feed, page and socket, to employees: the
# endpoint's own group check must still refuse them.
TOO_OPEN = """
[[rule]]
id = "test-feed-open-to-employees"
effect = "allow"
description = "a mistake the endpoint must survive"
paths = ["/ws/security-feed"]
groups = ["employees"]

[[rule]]
id = "test-live-page-open-to-employees"
effect = "allow"
description = "the same mistake for the page"
tools = ["live"]
groups = ["employees"]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("feed")) as gw:
        yield gw


def cookie(client: httpx.Client) -> str:
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def open_feed(gw: Gateway, cookie_header: str | None):
    return connect(
        gw.url.replace("http://", "ws://") + "/ws/security-feed",
        additional_headers={"Cookie": cookie_header} if cookie_header else {},
        origin=gw.url,
        open_timeout=10,
    )


def refused(gw: Gateway, cookie_header: str | None) -> int:
    with pytest.raises(InvalidStatus) as err:
        open_feed(gw, cookie_header).close()
    return err.value.response.status_code


def test_anonymous_and_non_security_users_are_refused(gw: Gateway):
    assert refused(gw, None) == 403
    for user in ("alice", "aud"):
        with gw.signed_in(user) as c:
            assert refused(gw, cookie(c)) == 403


def test_security_user_gets_denials_as_they_happen(gw: Gateway):
    with gw.signed_in("sam") as c, open_feed(gw, cookie(c)) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["user"] == "sam"
        with gw.signed_in("alice") as a:
            t0 = time.monotonic()
            assert a.get("/audit").status_code == 403
        form = httpx.get(gw.url + "/auth/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        httpx.post(gw.url + "/auth/login", data={"username": "mallory", "password": "nope", "csrf_token": token, "next": "/"}, cookies=form.cookies)
        seen: list[dict] = []
        deadline = time.monotonic() + 5
        def done() -> bool:
            kinds = {(e["kind"], e.get("user"), e.get("path")) for e in seen}
            return ("denial", "alice", "/audit") in kinds and any(k == ("signin_failure", "mallory") for k in (x[:2] for x in kinds))

        while time.monotonic() < deadline and not done():
            msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            if msg["type"] == "event":
                seen.append(msg["event"])
            elif msg["type"] == "events":  # several waiting at once arrive in one frame
                seen.extend(msg["events"])
        denial = next(e for e in seen if e["kind"] == "denial" and e.get("user") == "alice" and e.get("path") == "/audit")
        assert denial["action"] == "http.request" and denial["status"] == 403 and denial["tool"] == "audit"
        assert time.monotonic() - t0 < 2.5
        failure = next(e for e in seen if e["kind"] == "signin_failure")
        assert failure["user"] == "mallory" and "nope" not in json.dumps(failure)  # never the attempted password


def test_what_happened_before_connecting_arrives_at_once(gw: Gateway):
    with gw.signed_in("alice") as a:
        for _ in range(3):
            assert a.get("/policies").status_code == 403
    time.sleep(0.5)  # on its way to the feed's backlog
    with gw.signed_in("sam") as c, open_feed(gw, cookie(c)) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        msg = json.loads(ws.recv(timeout=5))
        assert msg["type"] == "events"  # the backlog in one frame, oldest first
        ids = [e["id"] for e in msg["events"]]
        assert ids == sorted(ids)
        assert sum(1 for e in msg["events"] if e.get("user") == "alice" and e.get("path") == "/policies") == 3


def test_a_client_that_talks_is_disconnected(gw: Gateway):
    with gw.signed_in("sam") as c, open_feed(gw, cookie(c)) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send("x" * 1000)
        with pytest.raises(ConnectionClosed) as err:
            while True:
                ws.recv(timeout=5)
        assert err.value.rcvd is not None and err.value.rcvd.code == 1003


def test_the_client_script_is_served_to_security_only(gw: Gateway):
    with gw.signed_in("sam") as c:
        r = c.get("/ws/security-feed/client.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert "textContent" in r.text and "innerHTML" not in r.text  # event data never becomes markup
    with gw.signed_in("alice") as c:
        assert c.get("/ws/security-feed/client.js").status_code == 403


def test_export_downloads_need_the_viewer_and_an_existing_export(gw: Gateway):
    job = "0123456789abcdef0123456789abcdef"
    assert httpx.get(gw.url + f"/api/audit-export/{job}", headers={"Accept": "application/json"}).status_code == 401
    with gw.signed_in("alice") as c:
        assert c.get(f"/api/audit-export/{job}").status_code == 403
    with gw.signed_in("aud") as c:
        assert c.get(f"/api/audit-export/{job}").status_code == 404
        assert c.delete(f"/api/audit-export/{job}").status_code == 403


def test_endpoint_refuses_non_security_users_even_when_policy_lets_them_through(gw: Gateway):
    def version() -> str:
        return httpx.get(gw.url + "/readyz").json()["checks"]["policy"]["version"]

    before = version()
    extra = gw.config.parent / "policies" / "45-test-too-open.toml"
    extra.write_text(TOO_OPEN)
    try:
        deadline = time.monotonic() + 20
        while version() == before and time.monotonic() < deadline:
            time.sleep(0.2)  # the hot reload picks the file up
        assert version() != before, "the test policy did not load"
        with gw.signed_in("alice") as c:
            assert refused(gw, cookie(c)) == 403
        # The policy did let the handshake through (its rule is on record): the endpoint refused it.
        trail = gw.config.parent / "audit" / "audit.jsonl"
        deadline = time.monotonic() + 5
        while b'"rule_id":"test-feed-open-to-employees"' not in trail.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b'"rule_id":"test-feed-open-to-employees"' in trail.read_bytes()
    finally:
        extra.unlink()


# ------------------------------------------------------------------ an open socket keeps checking


@pytest.fixture
async def services(tmp_path: Path):
    config = make_config_dir(tmp_path / "gw")
    add_users(config)
    svc = build_services(load_settings(config, environ={}))
    await svc.start()
    try:
        yield svc, config
    finally:
        await svc.stop()


async def _session(svc, user: str):
    sessions = svc.identity.sessions
    password, groups, email = USERS[user]
    record = await sessions.start(Response(), user=user, email=email, groups=groups, auth_method="password", https=False)
    ident = sessions.identity(record)
    ctx = RequestContext(request_id="t", client_ip="127.0.0.1", scheme="http", host="localhost", identity=ident, extra={"session": record})
    return record, ident, ctx


async def test_recheck_closes_on_sign_out_group_loss_and_guest_network(services):
    svc, config = services
    feature = next(f for f in svc.features if isinstance(f, LiveFeedFeature))
    record, ident, ctx = await _session(svc, "sam")
    assert feature.allowed(ctx, ident)
    assert await feature._recheck(ctx, ident) is None

    await svc.identity.sessions.revoke(record.session_id, reason="test")
    assert await feature._recheck(ctx, ident) == WS_SESSION_ENDED

    record, ident, ctx = await _session(svc, "sam")
    UserDirectory(config.parent / "users.toml").set_groups("sam", ["employees"])
    deadline = time.monotonic() + 5  # the gateway re-reads the users file about once a second
    code = None
    while code is None and time.monotonic() < deadline:
        code = await feature._recheck(ctx, ident)
        await asyncio.sleep(0.2)
    assert code == WS_FORBIDDEN

    UserDirectory(config.parent / "users.toml").set_groups("sam", ["employees", "security"])
    record, ident, ctx = await _session(svc, "sam")
    ctx.client_ip = "10.99.0.5"  # the guest Wi-Fi (policies/40-live-feed.toml, 90-guardrails.toml)
    assert not feature.allowed(ctx, ident)
    assert await feature._recheck(ctx, ident) == WS_FORBIDDEN
