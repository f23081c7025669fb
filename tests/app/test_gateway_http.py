"""The whole gateway over real HTTP: routes, sign-in gate, policy, errors, headers."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.app.conftest import Gateway
from tests.helpers import ROOT

HARDENING = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-resource-policy",
    "x-request-id",
)
DOCUMENT_ONLY = ("permissions-policy", "cross-origin-opener-policy")


def hardened(r: httpx.Response) -> None:
    for h in HARDENING:
        assert h in r.headers, f"{h} missing on {r.status_code} {r.request.url}"
    assert "server" not in r.headers
    if r.headers.get("content-type", "").startswith("text/html"):
        for h in DOCUMENT_ONLY:
            assert h in r.headers, f"{h} missing on the page {r.status_code} {r.request.url}"
    else:
        assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_public_routes(gateway: Gateway):
    with gateway.client() as c:
        h = c.get("/healthz")
        ready = c.get("/readyz")
        robots = c.get("/robots.txt")
        sec = c.get("/.well-known/security.txt")
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["policy"]["version"]
    assert ready.json()["checks"]["audit"]["ok"] is True
    assert robots.text == "User-agent: *\nDisallow: /\n"
    assert "Contact:" in sec.text and "Expires:" in sec.text
    for r in (h, ready, robots, sec):
        hardened(r)


def test_anonymous_browser_is_sent_to_sign_in_with_next(gateway: Gateway):
    with gateway.client() as c:
        r = c.get("/sales?region=EMEA", headers={"accept": "text/html"})
        unknown = c.get("/definitely-not-a-page", headers={"accept": "text/html"})
    assert r.status_code == 303
    assert r.headers["location"] == "/auth/login?next=%2Fsales%3Fregion%3DEMEA"
    hardened(r)
    # Anonymous users learn nothing about which paths exist.
    assert unknown.status_code == 303


def test_anonymous_api_gets_401_json(gateway: Gateway):
    with gateway.client() as c:
        r = c.get("/api/whoami")
        post = c.post("/", content=b"x")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert post.status_code == 401
    hardened(r)


def test_signed_in_employee_reaches_pages_and_whoami(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        home = c.get("/")
        sales = c.get("/sales")
        me = c.get("/api/whoami").json()
    assert home.status_code == 200 and "<div id=\"root\">" in home.text
    assert sales.status_code == 200
    assert me["user"] == "alice" and me["groups"] == ["employees"] and me["auth_method"] == "password"
    hardened(home)


def test_denied_page_is_branded_403_naming_whom_to_ask(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        html = c.get("/audit", headers={"accept": "text/html"})
        js = c.get("/audit", headers={"accept": "application/json"})
    assert html.status_code == 403
    assert "Audit viewer" in html.text and "security@example.com" in html.text
    assert html.headers["x-request-id"] in html.text
    assert js.status_code == 403 and js.json()["error"]["code"] == "forbidden"
    hardened(html)


@pytest.mark.parametrize(
    "path,status",
    [
        ("/AUDIT", 403),
        ("/Audit", 403),
        ("/%61udit", 403),
        ("/%2561udit", 403),
        ("//audit", 308),
        ("/audit/", 308),
        ("/sales%2F..%2Faudit", 400),
        ("/sales%2f..%2faudit", 400),
        ("/audit%00", 400),
        ("/audit%0d%0a", 400),
    ],
)
def test_path_tricks_cannot_dodge_policy(gateway: Gateway, path: str, status: int):
    with gateway.signed_in("alice") as c:
        # httpx would normalise dot segments itself; send the raw target.
        r = c.send(c.build_request("GET", httpx.URL(gateway.url + path, ), headers={"accept": "application/json"}))
        if r.status_code == 308:
            assert r.headers["location"] in ("/audit",)
            r2 = c.get(r.headers["location"], headers={"accept": "application/json"})
            assert r2.status_code == 403
    assert r.status_code == status
    hardened(r)


@pytest.mark.parametrize("target", ["/sales/../audit", "/./audit", "/sales/./../audit", "/sales/..%2faudit"])
def test_raw_dot_segments_over_the_wire(gateway: Gateway, target: str):
    """A raw request line with dot segments (httpx would collapse them itself)."""
    import socket

    with gateway.signed_in("alice") as c:
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    status = int(head.split(b" ", 2)[1])
    if "%2f" in target:
        assert status == 400  # an encoded slash is refused outright
    else:
        # Redirected to the canonical path, where policy then decides (403 above).
        assert status == 308 and b"\r\nlocation: /audit" in head


def test_unknown_path_is_a_real_404_for_signed_in_users(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        html = c.get("/no-such-tool", headers={"accept": "text/html"})
        js = c.get("/no-such-tool", headers={"accept": "application/json"})
        agent = c.get("/_stcore/agent/openapi.json")
        st_auth = c.get("/oauth2callback")
    assert html.status_code == 404 and "Page not found" in html.text
    assert js.status_code == 404 and js.json()["error"]["code"] == "not_found"
    assert agent.status_code == 404  # Streamlit's agent API stays unreachable
    assert st_auth.status_code == 404  # so does Streamlit's own OAuth callback
    hardened(html)


def test_handler_crash_is_branded_500_without_traceback(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        html = c.get("/api/test/boom", headers={"accept": "text/html"})
        js = c.get("/api/test/boom")
    assert html.status_code == 500 and js.status_code == 500
    for r in (html, js):
        assert "hunter2" not in r.text and "Traceback" not in r.text and "/srv/" not in r.text
        hardened(r)
    assert js.json()["error"]["request_id"] == js.headers["x-request-id"]
    # The traceback is in the server log, under the same request id.
    assert js.headers["x-request-id"] in gateway.log()


def test_spoofed_identity_headers_never_reach_the_app(gateway: Gateway):
    spoof = {
        "x-gateway-user": "sam",
        "x-gateway-groups": "security",
        "x-gateway-email": "sam@example.com",
        "x-forwarded-user": "sam",
        "x-goog-authenticated-user-email": "accounts.google.com:sam@example.com",
        "cf-access-authenticated-user-email": "sam@example.com",
        "remote-user": "sam",
        "x-forwarded-for": "10.9.9.9",
    }
    with gateway.signed_in("alice") as c:
        body = c.get("/api/test/echo", headers=spoof).json()
    headers = body["headers"]
    names = [k for k, _ in headers]
    assert ["x-gateway-user", "alice"] in headers
    assert ["x-gateway-groups", "employees"] in headers
    assert names.count("x-gateway-user") == 1
    for k in ("x-forwarded-user", "x-goog-authenticated-user-email", "cf-access-authenticated-user-email", "remote-user"):
        assert k not in names
    assert "sam" not in [v for k, v in headers if k.startswith("x-gateway-")]
    # The session cookie itself is not handed to the tools either.
    assert not any("toolgate_session" in v for k, v in headers if k == "cookie")
    assert body["client"] == "127.0.0.1"  # XFF from an untrusted peer is ignored


def test_bearer_token_and_tampered_token(gateway: Gateway):
    minted = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(gateway.config),
         "--sub", "ci-bot", "--groups", "employees", "--ttl", "600"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip().splitlines()[-1]
    with gateway.client() as c:
        ok = c.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
        head, payload, sig = token.split(".")
        # A signature that differs for sure: writing "AA" over its tail sent
        # the genuine token whenever it already ended in "AA" (1 in 4096
        # runs: seen once in CI).  All six bits of the first character count.
        forged = ("B" if sig[0] == "A" else "A") + sig[1:]
        bad = c.get("/api/whoami", headers={"authorization": f"Bearer {head}.{payload}.{forged}"})
        page = c.get("/audit", headers={"authorization": f"Bearer {token}", "accept": "application/json"})
    assert ok.status_code == 200 and ok.json()["user"] == "ci-bot" and ok.json()["auth_method"] == "token"
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
    assert page.status_code == 403


def test_revoking_a_token_subject_ends_its_tokens_and_the_trail_says_why(gateway: Gateway):
    import json
    import time

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--config", str(gateway.config)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    token = cli("token", "create", "--sub", "revoked-bot", "--groups", "employees", "--ttl", "600").strip().splitlines()[-1]
    with gateway.client() as c:
        assert c.get("/api/whoami", headers={"authorization": f"Bearer {token}"}).status_code == 200
        time.sleep(1.05)  # iat has whole seconds: the revocation must come after it
        cli("users", "revoke", "revoked-bot")
        refused = c.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
    rid = refused.headers["x-request-id"]
    audit = gateway.config.parent / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 5
    rec = None
    while rec is None and time.monotonic() < deadline:
        rec = next((r for r in map(json.loads, audit.read_text().splitlines()) if r.get("http", {}).get("request", {}).get("id") == rid), None)
        time.sleep(0.05)
    assert rec is not None and rec["event"]["reason"] == "invalid_token: revoked" and rec["gateway"]["decision"] == "deny"


def test_one_leaked_token_is_revoked_by_id_or_by_value_and_the_rest_keep_working(gateway: Gateway):
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--config", str(gateway.config)],
                           input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r

    def mint() -> tuple[str, str]:
        r = cli("token", "create", "--sub", "report-bot", "--groups", "employees", "--ttl", "600")
        return r.stdout.strip().splitlines()[-1], r.stderr.split("(jti ", 1)[1].split(")", 1)[0]

    import time

    (by_id, jti), (by_value, _), (kept, _) = mint(), mint(), mint()
    cli("token", "revoke", jti)
    cli("token", "revoke", "--token-stdin", stdin=by_value + "\n")
    # Running gateways look at the users file at most once a second: the
    # contract is "within seconds", not at once.
    deadline = time.monotonic() + 5
    with gateway.client() as c:
        while True:
            status = {name: c.get("/api/whoami", headers={"authorization": f"Bearer {t}"}).status_code
                      for name, t in (("by_id", by_id), ("by_value", by_value), ("kept", kept))}  # fmt: skip
            if status != {"by_id": 200, "by_value": 200, "kept": 200} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert status == {"by_id": 401, "by_value": 401, "kept": 200}


def test_bad_host_and_oversize_body(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        host = c.get("/", headers={"host": "evil.example"})
        big = c.post("/api/test/echo", content=b"x" * (2 * 1024 * 1024))
    assert host.status_code == 400
    assert big.status_code == 413
    hardened(host)
    hardened(big)


def test_every_request_is_audited_with_decision(gateway: Gateway):
    import json
    import time

    with gateway.signed_in("alice") as c:
        rid = c.get("/audit", headers={"accept": "application/json"}).headers["x-request-id"]
    audit = gateway.config.parent / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 5
    record = None
    while time.monotonic() < deadline and record is None:
        for line in audit.read_text().splitlines():
            if rid in line:
                record = json.loads(line)
        time.sleep(0.1)
    assert record is not None, "request not in the audit trail"
    flat = json.dumps(record)
    assert "alice" in flat and "deny" in flat and "audit" in flat


@pytest.mark.parametrize("path", ["/api/test/nothing-here", "/api/nope", "/auth/nope", "/_gateway/nope"])
def test_unrouted_paths_in_the_gateway_namespace_are_404_not_the_spa(gateway: Gateway, path: str):
    with gateway.signed_in("sam") as c:
        r = c.get(path, headers={"accept": "application/json"})
    # Streamlit would answer 200 with its SPA page; the gateway owns these paths.
    assert r.status_code in (403, 404), r.status_code
    assert "<div id=\"root\">" not in r.text
    with gateway.signed_in("sam") as c:
        allowed = c.get("/api/test/nothing-here", headers={"accept": "application/json"})
    assert allowed.status_code == 404 and allowed.json()["error"]["code"] == "not_found"
