"""Two gateway replicas sharing state through a real Redis, behind a real nginx (TLS).

The requests go client (127.0.0.2) -> nginx (TLS, 127.0.0.1; connects out
from 127.0.0.3, the only trusted proxy) -> replica A or B.  The proxy has a
port per upstream group ("all" round-robins, "a"/"b" pin one replica), so a
test can choose which replica handles each request.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.audit.verify import read_events
from tests.helpers import ROOT

from .conftest import Cluster
from .infra import CLIENT_IP, csrf_token, wait_for

pytestmark = pytest.mark.timeout(120)


def audit_events(folder: Path, **filters: Any) -> list[dict[str, Any]]:
    return list(read_events([folder], **filters)) if folder.exists() else []


def find_request(cluster: Cluster, request_id: str) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        for name in ("gw-a", "gw-b"):
            for rec in audit_events(cluster.audit_dir(name), request_id=request_id, actions=["http.request"]):
                return rec
        return None

    return wait_for(look, 5, what=f"audit record of request {request_id}")


def readyz(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=5)


def test_each_replica_writes_its_own_chain_with_its_replica_id(cluster: Cluster) -> None:
    for name in ("gw-a", "gw-b"):
        recs = wait_for(lambda: audit_events(cluster.audit_dir(name), actions=["gateway.start"]), 5, what="start record")
        assert {r["gateway"]["replica"] for r in recs} == {name}
    # The configured path itself is not shared by the two processes.
    assert not (cluster.config.parent / "audit" / "audit.jsonl").exists()


def test_sign_out_on_b_ends_the_session_on_a(cluster: Cluster) -> None:
    br = cluster.browser()
    assert br.login("alice").status_code == 303
    for via in ("a", "b"):
        r = br.get(via, "/api/whoami")
        assert r.status_code == 200, (via, r.text)
        assert r.json()["user"] == "alice"
    cookies = dict(br.http.cookies)  # the session cookie, kept to replay after sign-out

    form = br.get("b", "/auth/logout")
    out = br.post("b", "/auth/logout", data={"csrf_token": csrf_token(form.text)})
    assert out.status_code == 303
    logout_on = {r["gateway"]["replica"] for r in wait_for(lambda: audit_events(cluster.audit_dir("gw-b"), actions=["auth.logout"], user="alice"), 5, what="logout record")}
    assert logout_on == {"gw-b"}

    # The browser forgot its cookie; an attacker who copied it replays it on A.
    transport = httpx.HTTPTransport(local_address=CLIENT_IP, verify=cluster.certs.client_context())
    with httpx.Client(transport=transport, cookies=cookies, timeout=10) as thief:
        r = thief.get(br.url("a", "/api/whoami"))
        assert r.status_code == 401, r.text
        page = thief.get(br.url("a", "/sales"), headers={"accept": "text/html"})
        assert page.status_code in (302, 303) and "/auth/login" in page.headers["location"]


def test_brute_force_counters_add_up_across_replicas(cluster: Cluster) -> None:
    br = cluster.browser()
    user = "target-of-guessing"

    def guess(via: str) -> httpx.Response:
        return br.login(user, via=via, password="wrong-guess-123")

    assert guess("a").status_code == 401
    assert guess("b").status_code == 401
    # Two failures (one on each replica) make the next try wait a second:
    # replica A knows about the failure that B counted.
    early = guess("a")
    assert early.status_code == 429, early.text
    time.sleep(float(early.headers["retry-after"]) + 0.1)
    assert guess("b").status_code == 401  # the third failure: the limit
    locked = guess("a")
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 30  # locked for the rest of the window
    recs = wait_for(
        lambda: [r for n in ("gw-a", "gw-b") for r in audit_events(cluster.audit_dir(n), actions=["auth.login"], user=user)],
        5,
        what="login records",
    )
    reasons = sorted((r["gateway"]["replica"], r["event"]["reason"]) for r in recs)
    assert ("gw-a", "rate_limited") in reasons and ("gw-b", "invalid_credentials") in reasons


def test_real_client_ip_through_the_proxy_and_spoofed_forwarded_for_ignored(cluster: Cluster) -> None:
    br = cluster.browser()
    spoof = {"x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.9"}
    assert br.login("sam", headers=spoof).status_code == 303
    login = wait_for(lambda: audit_events(cluster.audit_dir("gw-a"), actions=["auth.login"], user="sam")
                     + audit_events(cluster.audit_dir("gw-b"), actions=["auth.login"], user="sam"), 5, what="sam's login")  # fmt: skip
    assert {r["client"]["ip"] for r in login} == {CLIENT_IP}

    r = br.get("all", "/api/whoami", headers=spoof)
    assert r.status_code == 200
    rec = find_request(cluster, r.headers["x-request-id"])  # nginx's $request_id, believed from the proxy
    assert rec["client"]["ip"] == CLIENT_IP
    assert "203.0.113.9" not in str(rec)

    # Straight to a replica (not through the trusted proxy): the header is ignored too.
    direct = httpx.get(cluster.a.url + "/healthz", headers={"x-forwarded-for": "198.51.100.7"}, timeout=5)
    assert direct.status_code == 200
    assert find_request(cluster, direct.headers["x-request-id"])["client"]["ip"] == "127.0.0.1"


def test_replicas_report_the_policy_version_each_serves(cluster: Cluster) -> None:
    def fleet(url: str) -> dict[str, str]:
        return readyz(url).json()["checks"]["state"]["fleet"]

    before = wait_for(lambda: (f := fleet(cluster.a.url)) and len(f) == 2 and f, 10, what="both replicas in the fleet")
    assert set(before) == {"gw-a", "gw-b"} and len(set(before.values())) == 1
    own = readyz(cluster.b.url).json()["checks"]["policy"]["version"]
    assert before["gw-b"] == own

    (cluster.config.parent / "policies" / "50-scale-test.toml").write_text(
        '[[rule]]\nid = "scale-test-extra"\neffect = "allow"\ndescription = "fleet version test"\n'
        'paths = ["/api/test/scale"]\ngroups = ["security"]\n'
    )
    after = wait_for(
        lambda: (f := fleet(cluster.b.url)) and len(set(f.values())) == 1 and set(f.values()) != set(before.values()) and f,
        10,
        what="the new policy version on every replica",
    )
    assert set(after) == {"gw-a", "gw-b"}


def test_redis_outage_fails_closed_and_recovers_without_restart(cluster: Cluster) -> None:
    br = cluster.browser()
    assert br.login("alice").status_code == 303
    assert br.get("a", "/api/whoami").status_code == 200
    token = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(cluster.config),
         "--sub", "alice", "--groups", "employees", "--ttl", "600"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip

    cluster.redis.stop()
    try:
        api = br.get("a", "/api/whoami")
        assert api.status_code == 503, api.text
        body = api.json()["error"]
        assert body["code"] == "unavailable" and body["request_id"] == api.headers["x-request-id"]
        assert api.headers["retry-after"]
        refused = find_request(cluster, api.headers["x-request-id"])
        assert refused["event"]["reason"] == "state_unavailable"
        assert refused["http"]["response"]["status_code"] == 503
        page = br.get("b", "/sales", headers={"accept": "text/html"})
        assert page.status_code == 503
        assert "Temporarily unavailable" in page.text and "Traceback" not in page.text and "redis" not in page.text.lower()
        assert page.headers["content-security-policy"]  # hardened like every response

        for replica in (cluster.a, cluster.b):
            ready = wait_for(lambda: (r := readyz(replica.url)).status_code == 503 and r, 5, what="readyz 503")
            assert ready.json()["checks"]["state"] == {**ready.json()["checks"]["state"], "ok": False, "error": "unreachable"}
            assert httpx.get(replica.url + "/healthz", timeout=5).status_code == 200

        # Signing in needs the shared counters: refused, not waved through.
        other = cluster.browser()
        assert other.login("sam").status_code == 503
        # What needs no shared state keeps working: anonymous redirect, API tokens.
        anon = other.get("all", "/sales", headers={"accept": "text/html"})
        assert anon.status_code in (302, 303)
        bearer = other.get("all", "/api/whoami", headers={"authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and bearer.json()["user"] == "alice"
    finally:
        cluster.redis.start()

    for replica in (cluster.a, cluster.b):
        wait_for(lambda: readyz(replica.url).status_code == 200, 10, what="readyz back to 200")
    # Redis came back empty (no persistence): the old session is gone, a new sign-in works.
    assert br.get("a", "/api/whoami").status_code == 401
    assert br.login("alice").status_code == 303
    assert br.get("a", "/api/whoami").status_code == 200
    assert br.get("b", "/api/whoami").status_code == 200

    for name, replica in (("gw-a", cluster.a), ("gw-b", cluster.b)):
        events = wait_for(
            lambda: (e := audit_events(cluster.audit_dir(name), actions=["state."]))
            and {x["event"]["action"] for x in e} >= {"state.unavailable", "state.recovered"} and e,
            5,
            what=f"state transitions in {name}'s audit",
        )
        actions = [e["event"]["action"] for e in events]
        # One record per transition, not one per failed request.
        assert actions == ["state.unavailable", "state.recovered"], actions
        assert events[1]["gateway"]["details"]["redis_restarted"] is True
        log = replica.log()
        assert "state.unavailable" in log and "state.recovered" in log
        assert "Traceback" not in log
        assert cluster.redis.password not in log
