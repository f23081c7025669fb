"""Nothing mounted is a side door: every route the gateway mounts is refused to anonymous
and wrong-group callers exactly as a page is, over HTTP and websockets, through a real uvicorn.

The route list is not written down here: it is read from the app ``create_app`` builds
(``st.App``'s routes, mounts and sub-apps, recursively), so a new mount is probed the
moment it exists.  What each caller should get comes from the same policy files the
gateway loaded; the only paths allowed to answer anonymous callers are the ones in
``PUBLIC`` below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.policy import Request, load_dir
from tests.app.conftest import USERS

# Reachable without signing in, on purpose.  A new public path must be added here
# (and reviewed), or the suite fails.
PUBLIC = {
    "/healthz", "/readyz", "/robots.txt", "/.well-known/security.txt", "/auth/login", "/auth/logout",
    "/auth/callback", "/auth/oidc/start", "/_gateway/static",
}  # fmt: skip
# Streamlit's own routes are not in the app's route list before start-up; probe one of each kind.
STREAMLIT_PROBES = [("http", "/_stcore/health", "GET"), ("http", "/_stcore/host-config", "GET"),
                    ("http", "/static/js/probe.js", "GET"), ("http", "/media/probe.png", "GET"),
                    ("ws", "/_stcore/stream", "GET")]  # fmt: skip
# Unmounted paths under the gateway's prefixes must not answer either.
UNMOUNTED_PROBES = [("ws", "/ws/not-mounted", "GET"), ("http", "/api/v1/not-mounted", "GET"), ("http", "/mcp/other", "POST")]
# Allowed by policy, refused on purpose by the feature itself: MCP takes API tokens only.
BEARER_ONLY = {"/mcp"}
CONCRETE = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Probe:
    kind: str  # http | ws
    path: str
    method: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.method}:{self.path}"


def _unwrap(app: Any) -> Any:
    """Through pure-ASGI wrappers (``.app``) to something with ``.routes``, if any."""
    for _ in range(8):
        if hasattr(app, "routes"):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def enumerate_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[Probe]:
    for r in routes:
        if isinstance(r, WebSocketRoute):
            yield Probe("ws", prefix + CONCRETE.sub("probe", r.path), "GET")
        elif isinstance(r, Route):
            path = prefix + CONCRETE.sub("probe", r.path)
            for m in sorted((r.methods or {"GET"}) - {"HEAD"}):
                yield Probe("http", path, m)
        elif isinstance(r, Mount):
            base = prefix + r.path
            inner = _unwrap(r.app)
            if inner is not None:
                yield from enumerate_routes(list(inner.routes), base)
            else:  # a leaf app (static files): one page and one miss below it
                yield Probe("http", base + "/index.html", "GET")
                yield Probe("http", base + "/probe-missing", "GET")
        elif isinstance(getattr(r, "routes", None), list):  # a group of routes (gateway.route_bundle)
            yield from enumerate_routes(r.routes, prefix)
        else:
            raise AssertionError(f"unknown route type {type(r).__name__}: extend the side-door test")


@pytest.fixture(scope="module")
def probes(platform_gw) -> list[Probe]:
    from gateway.app import create_app

    app = create_app(platform_gw.settings)
    found = list(dict.fromkeys(enumerate_routes(app._user_routes)))
    paths = {p.path for p in found}
    # The features this issue adds must be in the list (else the test would prove nothing).
    for expected in ("/api/tools", "/api/policy/decision", "/api/v1/sales/kpis", "/api/v1/docs", "/mcp", "/metrics",
                     "/docs", "/docs/probe", "/docs/assets/index.html", "/sitemap.xml", "/manifest.webmanifest", "/api/alerts/test"):
        assert expected in paths, expected
    extra = [Probe(k, p, m) for k, p, m in STREAMLIT_PROBES + UNMOUNTED_PROBES]
    return found + extra


@dataclass(frozen=True)
class Subject:
    name: str
    kind: str  # anonymous | session | token
    user: str | None = None
    groups: tuple[str, ...] = ()
    browser: bool = False


SUBJECTS = [
    Subject("anonymous-api", "anonymous"),
    Subject("anonymous-browser", "anonymous", browser=True),
    Subject("alice-session", "session", "alice", ("employees",), browser=True),
    Subject("sam-session", "session", "sam", ("employees", "security")),
    Subject("aud-session", "session", "aud", ("auditors",), browser=True),
    Subject("contractor-token", "token", "erin", ("contractors",)),
    Subject("scraper-token", "token", "prometheus", ("metrics",)),
    Subject("auditor-token", "token", "aud", ("auditors",)),
]


def _public(path: str) -> bool:
    return path in PUBLIC or any(path.startswith(p + "/") for p in PUBLIC)


def _json_flavour(path: str, browser: bool) -> bool:
    # gateway.errors.wants_json: an Accept naming text/html first gets HTML on
    # any path (a browser opening /api/v1/docs is sent to sign in), JSON otherwise.
    return not browser


@pytest.fixture(scope="module")
def policy(platform_gw):
    return load_dir(platform_gw.config.parent / "policies")


@pytest.fixture(scope="module")
def clients(platform_gw):
    made: dict[str, httpx.Client] = {}
    for s in SUBJECTS:
        headers = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"} if s.browser else {"accept": "application/json"}
        if s.kind == "token":
            headers.update(platform_gw.bearer(s.user, list(s.groups)))
        c = platform_gw.client(headers=headers)
        if s.kind == "session":
            platform_gw.login(s.user, c)
        made[s.name] = c
    yield made
    for c in made.values():
        c.close()


def _reference(clients) -> dict[tuple[int, bool], httpx.Response]:
    """How a tool page is refused, keyed by (status, JSON flavour)."""
    ref = {
        (303, False): clients["anonymous-browser"].get("/sales"),
        (401, True): clients["anonymous-api"].get("/sales"),
        (401, False): clients["anonymous-browser"].post("/sales"),
        (403, False): clients["alice-session"].get("/audit"),
        (403, True): clients["contractor-token"].get("/audit"),
    }
    for (status, _), r in ref.items():
        assert r.status_code == status, (status, r.status_code)
    return ref


HARDENING = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy", "x-request-id")


def _same_refusal(r: httpx.Response, ref: httpx.Response, probe: Probe) -> None:
    assert r.status_code == ref.status_code, f"{probe}: {r.status_code} != {ref.status_code}: {r.text[:200]}"
    for h in HARDENING:
        assert h in r.headers, f"{probe}: no {h}"
    assert r.headers["cache-control"] == "no-store", probe
    assert "server" not in r.headers, probe
    if r.status_code == 303:
        assert r.headers["location"] == "/auth/login?next=" + quote(probe.path, safe=""), probe
        return
    if ref.headers["content-type"].startswith("application/json"):
        body = r.json()["error"]
        assert body["code"] == ref.json()["error"]["code"], probe
        assert body["request_id"] == r.headers["x-request-id"], probe
        if r.status_code == 401:
            assert r.headers["www-authenticate"].startswith("Bearer"), probe
    else:
        assert r.headers["content-type"].startswith("text/html"), probe
        title = re.search(r"<h1>(.*?)</h1>", ref.text).group(1)
        assert f"<h1>{title}</h1>" in r.text, probe


def _http(client: httpx.Client, probe: Probe, session: bool) -> httpx.Response:
    headers = {}
    if probe.method not in ("GET", "HEAD") and session:
        # What our own pages send; without it the CSRF guard (not the policy) would refuse.
        headers = {"x-requested-with": "XMLHttpRequest"}
    content = b"{}" if probe.method in ("POST", "PUT", "PATCH") else None
    if content is not None:
        headers["content-type"] = "application/json"
    return client.request(probe.method, probe.path, headers=headers, content=content)


def _ws_status(platform_gw, probe: Probe, headers: dict[str, str]) -> int:
    url = platform_gw.url.replace("http://", "ws://") + probe.path
    try:
        with connect(url, additional_headers=headers, origin=platform_gw.url, open_timeout=10,
                     subprotocols=["streamlit"] if probe.path.startswith("/_stcore/") else None):  # fmt: skip
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_every_mounted_path_is_refused_like_a_page(probes, policy, clients):
    ref = _reference(clients)
    checked = 0
    for probe in probes:
        if probe.kind != "http" or _public(probe.path):
            continue
        for s in SUBJECTS:
            r = _http(clients[s.name], probe, s.kind == "session")
            as_json = _json_flavour(probe.path, s.browser)
            if s.kind == "anonymous":
                status = 303 if probe.method in ("GET", "HEAD") and not as_json else 401
                _same_refusal(r, ref[(status, as_json)], probe)
            else:
                email = USERS[s.user][2] if s.kind == "session" else None
                decision = policy.decide(Request(user=s.user, groups=s.groups, email=email, path=probe.path,
                                                 method=probe.method, ip="127.0.0.1"))  # fmt: skip
                if not decision.allowed:
                    _same_refusal(r, ref[(403, as_json)], probe)
                elif probe.path in BEARER_ONLY and s.kind == "session":
                    assert r.status_code == 401, (str(probe), s.name)
                    if as_json:
                        assert r.json()["error"]["code"] == "unauthorized", (str(probe), s.name)
                else:
                    assert r.status_code not in (401, 403), (
                        f"{probe} as {s.name}: allowed by {decision.rule_id} but {r.status_code}: {r.text[:200]}"
                    )
            checked += 1
    assert checked > 150


def test_every_websocket_route_is_refused_like_the_app_socket(platform_gw, probes, policy, clients):
    ws_probes = [p for p in probes if p.kind == "ws"]
    assert any(p.path.startswith("/ws/") for p in ws_probes)
    cookie = "; ".join(f"{k}={v}" for k, v in clients["alice-session"].cookies.items())
    for probe in ws_probes:
        assert _ws_status(platform_gw, probe, {}) == 403, f"{probe}: anonymous handshake accepted"
        for name, headers, user, groups in (
            ("alice-session", {"Cookie": cookie}, "alice", ("employees",)),
            ("contractor-token", platform_gw.bearer("erin", ["contractors"]), "erin", ("contractors",)),
        ):
            allowed = policy.decide(Request(user=user, groups=groups, path=probe.path, method="GET", ip="127.0.0.1")).allowed
            status = _ws_status(platform_gw, probe, headers)
            if allowed:
                assert status != 403 or probe.path.startswith("/ws/not-mounted"), f"{probe} as {name}"
            else:
                assert status == 403, f"{probe} as {name}: wrong-group handshake accepted ({status})"


def test_nothing_public_beyond_the_list(platform_gw, probes, clients):
    from gateway.paths import is_public

    for probe in probes:
        if probe.kind == "http" and is_public(probe.path.lower()):
            assert _public(probe.path), f"{probe} is public but not in the reviewed PUBLIC list"
    # and the platform's paths are not among them
    for path in ("/docs", "/metrics", "/mcp", "/api/v1/docs", "/sitemap.xml", "/manifest.webmanifest"):
        assert not is_public(path)
