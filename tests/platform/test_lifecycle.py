"""A second gateway with other platform settings: public guide, metrics from another network only,
the data API off, the audit integrity self-check every second; then its shutdown."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.platform.conftest import mcp_initialize, start_platform_gateway


@pytest.fixture(scope="module")
def gw_b(tmp_path_factory, hooks):
    gw = start_platform_gateway(
        tmp_path_factory.mktemp("platform-b"),
        platform=(
            'docs_public = true\nmetrics_networks = ["10.0.0.0/8"]\napi = false\n'
            "integrity_check_interval_s = 1\nsession_sweep_interval_s = 1\n"
        ),
        alerts=f'webhook_url = "{hooks.url}"\nwebhook_secret_file = "secrets/webhook.key"\n',
    )  # fmt: skip
    try:
        yield gw
    finally:
        gw.process.stop()


def test_the_guide_can_be_made_public_and_nothing_else_opens_with_it(gw_b):
    anon = gw_b.client(headers={"accept": "text/html"})
    for path in ("/docs", "/docs/audit.html", "/docs/assets/site.css"):
        assert anon.get(path).status_code == 200, path
    assert anon.get("/sitemap.xml").status_code == 303
    assert anon.get("/manifest.webmanifest").status_code == 303
    assert anon.get("/api/v1/docs").status_code == 303  # a browser is sent to sign in
    assert anon.get("/metrics").status_code == 303
    assert anon.post("/docs/index.html").status_code in (401, 405)


def test_metrics_are_refused_outside_the_configured_networks(gw_b):
    r = gw_b.client(headers={**gw_b.bearer("prometheus", ["metrics"]), "accept": "application/json"}).get("/metrics")
    assert r.status_code == 403 and "network" in r.json()["error"]["message"]
    gw_b.wait_audit(lambda e: e["event"]["action"] == "http.request" and e.get("url", {}).get("path") == "/metrics"
                    and e["event"].get("reason") == "metrics_network")  # fmt: skip


def test_features_can_be_switched_off(gw_b):
    c = gw_b.client(headers=gw_b.bearer("alice", ["employees"]))
    for path in ("/api/v1", "/api/v1/docs", "/api/v1/sales/kpis"):
        r = c.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path  # not Streamlit's page
    ready = gw_b.client().get("/readyz").json()["checks"]
    assert ready["mcp"]["ok"] is True and ready["background"]["ok"] is True


def test_a_broken_audit_chain_raises_a_critical_alert(gw_b, hooks):
    gw_b.wait_audit(lambda e: e["event"]["action"] == "gateway.start")
    path = gw_b.audit_path
    raw = path.read_bytes()
    first = raw.split(b"\n", 1)[0]
    at = first.index(b'"@timestamp":"') + len(b'"@timestamp":"') + 3  # the last digit of the year
    with path.open("r+b") as fh:  # edit in place, as an intruder would
        fh.seek(at)
        fh.write(b"9" if raw[at:at + 1] != b"9" else b"8")
    hook = hooks.wait_for(lambda h: h["json"]["kind"] == "audit_integrity" and h["json"]["gateway"] == gw_b.settings.server.public_url,
                          timeout=15)  # fmt: skip
    assert hook["json"]["severity"] == "critical"
    assert hook["json"]["details"]["kind"] == "edited" and hook["json"]["details"]["line"] == 1
    rec = gw_b.wait_audit(lambda e: e["event"]["action"] == "audit.integrity_failed")
    assert rec["gateway"]["details"]["kind"] == "edited"
    checks = gw_b.client().get("/readyz").json()["checks"]["background"]
    assert checks["audit_integrity_ok"] is False and "audit.jsonl" not in json.dumps(checks)  # no paths on a public probe
    # reported once, not every second
    time.sleep(2.5)
    assert sum(1 for h in hooks.calls if h["json"]["kind"] == "audit_integrity" and h["json"]["gateway"] == gw_b.settings.server.public_url) == 1


def test_shutdown_closes_websockets_properly_and_drains_the_audit_queue(gw_b):
    with gw_b.signed_in("alice") as c:
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    # An MCP client's server-to-client stream is open too (a long-lived HTTP response).
    token = gw_b.token("alice", ["employees"])
    session = mcp_initialize(gw_b, token)
    stream_ended = threading.Event()

    def listen() -> None:
        headers = {"authorization": f"Bearer {token}", "mcp-session-id": session, "accept": "text/event-stream",
                   "mcp-protocol-version": LATEST_HANDSHAKE_VERSION}  # fmt: skip
        try:
            with httpx.stream("GET", gw_b.url + "/mcp", headers=headers, timeout=30) as r:
                assert r.status_code == 200
                for _ in r.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass
        stream_ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)
    assert not stream_ended.is_set()
    url = gw_b.url.replace("http://", "ws://") + "/_stcore/stream"
    with connect(url, additional_headers={"Cookie": cookie}, origin=gw_b.url, subprotocols=["streamlit"], open_timeout=10) as ws:
        started = time.monotonic()
        gw_b.process.proc.terminate()  # SIGTERM, as an orchestrator sends it
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # "service restart": clients reconnect
    gw_b.process.proc.wait(timeout=20)
    assert stream_ended.wait(5)
    assert time.monotonic() - started < 10  # open streams did not hold the shutdown up
    events = gw_b.audit_events()
    actions = [e["event"]["action"] for e in events]
    assert actions[-1] == "gateway.stop"
    sessions = [e for e in events if e["event"]["action"] == "websocket.session" and e.get("user", {}).get("name") == "alice"]
    assert sessions and actions.index("websocket.session") < len(actions) - 1
    assert events[-1]["seq"] == len(events)  # nothing lost: every queued event reached the file, in order
    log = gw_b.process.log()
    # the MCP session manager runs inside the gateway's lifespan: up before it serves, down before it ends
    assert log.index("StreamableHTTP session manager started") < log.index("gateway.started") < log.index("Shutting down")
    assert log.index("Shutting down") < log.index("StreamableHTTP session manager shutting down") < log.index("gateway.stopped")
