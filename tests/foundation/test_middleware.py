"""The foundation layers, each driven through httpx against a small ASGI app.

Every test here pins a security property: it would fail if the layer were
removed or loosened.
"""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.context import get_context
from gateway.csp import inline_script_hashes, streamlit_index_path
from gateway.middleware.body_limit import BodyLimitMiddleware
from gateway.middleware.error_boundary import ErrorBoundaryMiddleware
from gateway.middleware.ip_allowlist import IPAllowlistMiddleware
from gateway.middleware.request_context import RequestContextMiddleware
from gateway.middleware.security_headers import SecurityHeadersMiddleware
from gateway.middleware.trusted_host import TrustedHostMiddleware

net = ipaddress.ip_network
# On every response, whatever its type.
SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-resource-policy",
    "x-request-id",
)
# Only on documents (and scripts): they mean nothing on an API answer.
DOCUMENT_HEADERS = ("permissions-policy", "cross-origin-opener-policy", "x-permitted-cross-domain-policies")
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"


async def echo(request: Request) -> JSONResponse:
    ctx = get_context(request.scope)
    assert ctx is not None
    return JSONResponse(
        {
            "client_ip": ctx.client_ip,
            "scope_client": request.scope["client"][0],
            "scheme": ctx.scheme,
            "host": ctx.host,
            "request_id": ctx.request_id,
        },
        headers={"server": "leaky/1.0"},
    )


async def upload(request: Request) -> JSONResponse:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"received": total})


async def typed(request: Request) -> Response:
    """A body of the type the test asks for (``?type=``; none at all when empty)."""
    media_type = request.query_params.get("type") or None
    status = int(request.query_params.get("status", "200"))
    own_csp = request.query_params.get("csp")
    return Response(b"" if status == 304 else b"x", status_code=status, media_type=media_type,
                    headers={"content-security-policy": own_csp} if own_csp else None)


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("secret internal detail /srv/app/secret.py")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo:" + await websocket.receive_text())
    except WebSocketDisconnect:
        pass


def build(
    *,
    trusted_proxies=(),
    networks=(net("0.0.0.0/0"), net("::/0")),
    hosts=("testserver", "localhost", "*.corp.example"),
    max_body=1024,
    https=False,
) -> Starlette:
    return Starlette(
        routes=[
            Route("/", echo),
            Route("/upload", upload, methods=["POST"]),
            Route("/boom", boom),
            Route("/typed", typed),
            Route("/healthz", echo),
            Route("/readyz", echo),
            Route("/healthz/{rest:path}", echo),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/healthz", ws_echo),
        ],
        middleware=[
            Middleware(RequestContextMiddleware, trusted_proxies=trusted_proxies),
            Middleware(SecurityHeadersMiddleware, https=https),
            Middleware(ErrorBoundaryMiddleware),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(IPAllowlistMiddleware, networks=networks),
            Middleware(BodyLimitMiddleware, max_body_bytes=max_body),
        ],
    )


def client(app, peer: str = "203.0.113.7", **kw) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kw)


def assert_hardened(response: httpx.Response) -> None:
    for name in SECURITY_HEADERS:
        assert name in response.headers, f"{name} missing on {response.status_code}"
    assert "server" not in response.headers


# ------------------------------------------------------------ request context


async def test_request_id_generated_and_inbound_ignored_from_untrusted_peer():
    async with client(build()) as c:
        r = await c.get("/", headers={"x-request-id": "attacker-chosen-id-123"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid != "attacker-chosen-id-123" and len(rid) == 32
    assert r.json()["request_id"] == rid


async def test_request_id_accepted_from_trusted_proxy_only_when_well_formed():
    app = build(trusted_proxies=(net("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.5") as c:
        good = await c.get("/", headers={"x-request-id": "lb-req-0001-abcdef"})
        bad = await c.get("/", headers={"x-request-id": "bad id\r\nx: y"})
    assert good.headers["x-request-id"] == "lb-req-0001-abcdef"
    assert bad.headers["x-request-id"] != "bad id\r\nx: y"


async def test_spoofed_x_forwarded_for_from_untrusted_peer_is_ignored():
    async with client(build(trusted_proxies=(net("10.0.0.0/8"),))) as c:
        r = await c.get("/", headers={"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "https"})
    assert r.json()["client_ip"] == "203.0.113.7"
    assert r.json()["scope_client"] == "203.0.113.7"
    assert r.json()["scheme"] == "http"


async def test_right_most_untrusted_hop_is_the_client_behind_trusted_proxies():
    app = build(trusted_proxies=(net("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.5") as c:
        # The client forged the first entry; the proxy appended the real peer.
        r = await c.get("/", headers={"x-forwarded-for": "1.2.3.4, 198.51.100.9, 10.0.0.9", "x-forwarded-proto": "https"})
    body = r.json()
    assert body["client_ip"] == "198.51.100.9"
    assert body["scope_client"] == "198.51.100.9"  # Streamlit sees the real client too
    assert body["scheme"] == "https"


async def test_multiple_x_forwarded_for_headers_are_one_chain():
    app = build(trusted_proxies=(net("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.5") as c:
        r = await c.get("/", headers=[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "198.51.100.9")])
    assert r.json()["client_ip"] == "198.51.100.9"


async def test_malformed_forwarded_hop_from_trusted_proxy_is_refused():
    app = build(trusted_proxies=(net("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.5") as c:
        r = await c.get("/", headers={"x-forwarded-for": "not-an-ip"})
    assert r.status_code == 400
    assert_hardened(r)


async def test_ipv6_and_mapped_addresses():
    app = build(trusted_proxies=(net("::1/128"),), networks=(net("192.0.2.0/24"),))
    async with client(app, peer="::1") as c:
        r = await c.get("/", headers={"x-forwarded-for": "::ffff:192.0.2.10"})
    assert r.status_code == 200
    assert r.json()["client_ip"] == "192.0.2.10"


# ------------------------------------------------------------ trusted host


@pytest.mark.parametrize(
    "host,status",
    [
        ("testserver", 200),
        ("LOCALHOST:8501", 200),
        ("tools.corp.example", 200),
        ("corp.example", 400),
        ("evil.com", 400),
        ("testserver.evil.com", 400),
        ("user@testserver", 400),
        ("testserver:99999", 400),
        ("testserver/path", 400),
        ("", 400),
    ],
)
async def test_trusted_host(host, status):
    async with client(build()) as c:
        r = await c.get("/", headers={"host": host})
    assert r.status_code == status
    assert_hardened(r)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_on_any_host(path):
    # A load balancer's checker may send the target's address as Host (an
    # AWS ALB cannot be told otherwise): the probes must not depend on it.
    async with client(build()) as c:
        for host in ("10.1.2.3:8501", "evil.com", ""):
            r = await c.get(path, headers={"host": host})
            assert r.status_code == 200, (path, host)
            assert_hardened(r)


@pytest.mark.parametrize("path", ["/healthz/", "/healthz/x", "/HEALTHZ", "/readyz.json", "//healthz", "/healthz%2F"])
async def test_only_the_exact_probe_paths_skip_the_host_check(path):
    async with client(build()) as c:
        r = await c.get(path, headers={"host": "evil.com"})
    assert r.status_code == 400, path


async def test_the_allowlist_still_decides_who_may_probe():
    app = build(networks=(net("192.0.2.0/24"),))
    async with client(app, peer="198.51.100.1") as c:
        assert (await c.get("/healthz", headers={"host": "evil.com"})).status_code == 403
    async with client(app, peer="192.0.2.44") as c:
        assert (await c.get("/healthz", headers={"host": "evil.com"})).status_code == 200


def test_a_websocket_to_a_probe_path_gets_the_host_check():
    with ws_client(build()).websocket_connect("/healthz", headers={"origin": "http://testserver"}) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo:hi"
    with pytest.raises(WebSocketDisconnect):
        with ws_client(build()).websocket_connect("/healthz", headers={"host": "evil.com"}) as ws:
            ws.receive_text()


def test_trusted_host_rejects_bad_patterns():
    with pytest.raises(ValueError):
        TrustedHostMiddleware(None, allowed_hosts=["ev*l.com"])
    with pytest.raises(ValueError):
        TrustedHostMiddleware(None, allowed_hosts=[])


# ------------------------------------------------------------ ip allowlist


async def test_network_allowlist_allows_and_denies():
    app = build(networks=(net("192.0.2.0/24"),))
    async with client(app, peer="192.0.2.44") as c:
        assert (await c.get("/")).status_code == 200
    async with client(app, peer="198.51.100.1") as c:
        r = await c.get("/", headers={"accept": "application/json"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert_hardened(r)


async def test_spoofed_forwarded_for_cannot_reach_allowlisted_network():
    app = build(networks=(net("10.0.0.0/8"),), trusted_proxies=(net("192.0.2.1/32"),))
    async with client(app, peer="198.51.100.1") as c:
        r = await c.get("/", headers={"x-forwarded-for": "10.1.2.3"})
    assert r.status_code == 403


async def test_allowlist_uses_client_behind_trusted_proxy():
    app = build(networks=(net("10.0.0.0/8"),), trusted_proxies=(net("192.0.2.1/32"),))
    async with client(app, peer="192.0.2.1") as c:
        ok = await c.get("/", headers={"x-forwarded-for": "10.1.2.3"})
        denied = await c.get("/", headers={"x-forwarded-for": "10.1.2.3, 198.51.100.8"})
    assert ok.status_code == 200
    assert denied.status_code == 403


def test_unparseable_peer_is_denied():
    mw = IPAllowlistMiddleware(None, networks=(net("0.0.0.0/0"),))
    assert not mw.allowed("testclient")
    assert not mw.allowed("")


# ------------------------------------------------------------ body limit


async def test_declared_oversize_body_gets_413_without_reading():
    async with client(build(max_body=1024)) as c:
        r = await c.post("/upload", content=b"x" * 4096)
    assert r.status_code == 413
    assert_hardened(r)


async def test_streamed_oversize_body_is_cut_off_not_buffered():
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(1000):
            sent += 512
            yield b"y" * 512

    async with client(build(max_body=2048)) as c:
        r = await c.post("/upload", content=chunks())
    assert r.status_code == 413
    assert_hardened(r)
    # The gateway stopped reading soon after the limit; it never took the whole body.
    assert sent < 10 * 2048


async def test_body_under_limit_passes():
    async with client(build(max_body=2048)) as c:
        r = await c.post("/upload", content=b"z" * 2000)
    assert r.status_code == 200 and r.json() == {"received": 2000}


async def test_invalid_content_length_is_400():
    async with client(build()) as c:
        r = await c.post("/upload", content=b"abc", headers={"content-length": "abc"})
    assert r.status_code == 400


# ------------------------------------------------------------ headers and errors


async def test_security_headers_on_success_and_banner_removed():
    async with client(build()) as c:
        r = await c.get("/")
    assert_hardened(r)
    assert "strict-transport-security" not in r.headers
    assert r.headers["cache-control"] == "no-store"
    # An API answer: nothing in it may load or run anything, and it carries
    # none of the document-only policies.
    assert r.headers["content-security-policy"] == STRICT_CSP
    for name in DOCUMENT_HEADERS:
        assert name not in r.headers


async def test_documents_and_scripts_get_the_streamlit_policy_and_document_headers():
    async with client(build()) as c:
        for media_type in ("text/html; charset=utf-8", "application/xhtml+xml", "text/javascript", "application/javascript"):
            r = await c.get("/typed", params={"type": media_type})
            assert_hardened(r)
            for name in DOCUMENT_HEADERS:
                assert name in r.headers, f"{name} missing on {media_type}"
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, media_type
            assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


@pytest.mark.parametrize("media_type", ["application/json", "text/plain", "text/css", "image/svg+xml", "image/png", "text/xml", "application/pdf", ""])
async def test_everything_else_gets_the_strict_policy(media_type):
    # An SVG opened directly, or a body with no type that a browser sniffs as
    # HTML, must not be able to run script: 'none' for everything.
    async with client(build()) as c:
        r = await c.get("/typed", params={"type": media_type})
    assert_hardened(r)
    assert r.headers["content-security-policy"] == STRICT_CSP
    assert "permissions-policy" not in r.headers


async def test_not_modified_keeps_the_document_policy():
    # Browsers merge a 304's headers into the cached response; a strict CSP
    # here would replace the cached page's policy and break the app.
    async with client(build()) as c:
        r = await c.get("/typed", params={"status": "304"})
    assert r.status_code == 304
    assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_a_response_keeps_its_own_policy():
    own = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
    async with client(build()) as c:
        html = await c.get("/typed", params={"type": "text/html", "csp": own})
        data = await c.get("/typed", params={"type": "application/json", "csp": own})
    assert html.headers["content-security-policy"] == own
    assert data.headers["content-security-policy"] == own
    assert len(html.headers.get_list("content-security-policy")) == 1


async def test_csp_carries_hash_of_installed_streamlit_inline_script():
    hashes = inline_script_hashes(streamlit_index_path().read_text())
    assert hashes, "Streamlit's index.html changed shape: no inline script found"
    async with client(build()) as c:
        csp = (await c.get("/typed", params={"type": "text/html"})).headers["content-security-policy"]
    for h in hashes:
        assert h in csp


async def test_hsts_only_over_https():
    async with client(build(https=True)) as c:
        r = await c.get("/typed", params={"type": "text/html"})
        data = await c.get("/")
    assert r.headers["strict-transport-security"].startswith("max-age=63072000")
    assert data.headers["strict-transport-security"] == r.headers["strict-transport-security"]
    assert "upgrade-insecure-requests" in r.headers["content-security-policy"]
    app = build(trusted_proxies=(net("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.1") as c:
        r = await c.get("/", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" in r.headers


async def test_crash_gives_branded_500_without_traceback():
    async with client(build()) as c:
        html = await c.get("/boom", headers={"accept": "text/html"})
        js = await c.get("/boom", headers={"accept": "application/json"})
    assert html.status_code == 500 and js.status_code == 500
    assert_hardened(html)
    for r in (html, js):
        assert "secret" not in r.text and "Traceback" not in r.text and "/srv" not in r.text
    assert html.headers["x-request-id"] in html.text
    assert js.json()["error"]["request_id"] == js.headers["x-request-id"]
    assert "<html" in html.text and "Something went wrong" in html.text
    for name in DOCUMENT_HEADERS:
        assert name in html.headers and name not in js.headers


# ------------------------------------------------------------ websockets


def ws_client(app, peer="203.0.113.7"):
    return TestClient(app, client=(peer, 5000))


def test_websocket_passes_through_every_layer():
    with ws_client(build()).websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo:hi"


@pytest.mark.parametrize(
    "kwargs,headers,peer",
    [
        ({}, {"host": "evil.com"}, "203.0.113.7"),
        ({}, {"origin": "https://evil.com"}, "203.0.113.7"),
        ({}, {"origin": "null"}, "203.0.113.7"),
        ({"networks": (net("192.0.2.0/24"),)}, {}, "203.0.113.7"),
    ],
)
def test_websocket_refused_before_accept(kwargs, headers, peer):
    with pytest.raises(WebSocketDisconnect):
        with ws_client(build(**kwargs), peer=peer).websocket_connect("/ws", headers=headers) as ws:
            ws.receive_text()


@pytest.mark.parametrize(
    "origins",
    [
        [b"https://evil.com", b"http://testserver"],
        [b"http://testserver", b"https://evil.com"],
        [b"http://testserver", b"http://testserver"],
    ],
)
async def test_a_handshake_with_two_origins_is_refused(origins):
    # A browser sends one Origin; two means the check and the app could each
    # read a different one.
    sent: list[dict] = []
    scope = {
        "type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"", "scheme": "ws",
        "headers": [(b"host", b"testserver"), *((b"origin", o) for o in origins)],
        "client": ("203.0.113.7", 5000), "server": ("testserver", 80), "subprotocols": [], "asgi": {"version": "3.0"},
    }  # fmt: skip

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    await build()(scope, receive, send)
    assert sent and sent[0]["type"] in ("websocket.close", "websocket.http.response.start")
    assert not any(m["type"] == "websocket.accept" for m in sent)


def test_errors_body_json_shape():
    from gateway.errors import status_info

    for status in (400, 401, 403, 404, 413, 429, 500, 503):
        code, title, message = status_info(status)
        assert code and title and message
        assert json.dumps({"code": code})
