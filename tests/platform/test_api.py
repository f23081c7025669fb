"""``/api/tools`` and ``/api/policy/decision`` through a real gateway: cookies and tokens, CSRF."""

from __future__ import annotations


def test_tools_lists_what_the_policy_lets_me_open(platform_gw):
    with platform_gw.signed_in("alice") as c:
        r = c.get("/api/tools")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["user"] == "alice"
    assert [t["id"] for t in body["tools"]] == ["home", "sales", "ops"]
    assert body["tools"][1]["url"].endswith("/sales")

    r = platform_gw.client(headers=platform_gw.bearer("aud", ["auditors"])).get("/api/tools")
    assert [t["id"] for t in r.json()["tools"]] == ["home", "audit"]


def test_tools_as_html_is_escaped_and_script_free(platform_gw):
    r = platform_gw.client(headers={**platform_gw.bearer("<b>x</b>", ["employees"]), "accept": "text/html"}).get("/api/tools")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;x&lt;/b&gt;" in r.text and "<b>x</b>" not in r.text
    assert '<a href="/sales">Sales</a>' in r.text
    assert "script-src" not in r.headers["content-security-policy"] and "default-src 'none'" in r.headers["content-security-policy"]


def test_decision_for_myself_gives_the_answer_not_the_rules(platform_gw):
    with platform_gw.signed_in("alice") as c:
        denied = c.get("/api/policy/decision", params={"path": "/AUDIT"}).json()
        allowed = c.get("/api/policy/decision", params={"path": "/sales/../ops"}).json()
    assert denied["allowed"] is False and denied["request"]["path"] == "/audit"
    assert "contact" in denied["message"]
    assert "rules" not in denied and "rule_id" not in denied  # no hints at what to forge
    assert allowed["allowed"] is True and allowed["request"]["tool"] == "ops"


def test_only_security_explains_for_someone_else(platform_gw):
    q = {"path": "/policies", "user": "mallory", "groups": "security"}
    with platform_gw.signed_in("alice") as c:
        r = c.get("/api/policy/decision", params=q)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    with platform_gw.signed_in("sam") as c:
        r = c.get("/api/policy/decision", params=q)
    assert r.status_code == 200
    body = r.json()
    assert body["subject"]["user"] == "mallory" and body["allowed"] is True
    assert body["rule_id"] == "policy-editor-security"
    assert any(v["rule_id"] == "dashboards-employees" and not v["matched"] for v in body["rules"])
    # and the explanation honours a network guardrail for a given address
    r = platform_gw.client(headers=platform_gw.bearer("sam", ["security"])).post(
        "/api/policy/decision", json={"path": "/policies", "user": "mallory", "groups": ["security"], "ip": "10.99.0.5"}
    )
    assert r.status_code == 200 and r.json()["rule_id"] == "no-security-tools-from-guest-wifi"


def test_bad_questions_are_400(platform_gw):
    c = platform_gw.client(headers=platform_gw.bearer("alice", ["employees"]))
    assert c.get("/api/policy/decision").status_code == 400
    assert c.get("/api/policy/decision", params={"path": "/a%2fb"}).status_code == 400
    assert c.post("/api/policy/decision", content=b"[1,2]", headers={"content-type": "application/json"}).status_code == 400
    assert c.get("/api/policy/decision", params={"path": "/x", "at": "yesterday"}).status_code == 400


def test_post_with_a_cookie_needs_the_csrf_header(platform_gw):
    body = {"path": "/sales"}
    with platform_gw.signed_in("alice") as c:
        forged = c.post("/api/policy/decision", json=body)
        assert forged.status_code == 403 and "X-Requested-With" in forged.json()["error"]["message"]
        cross = c.post("/api/policy/decision", json=body, headers={"x-requested-with": "x", "origin": "https://evil.example"})
        assert cross.status_code == 403
        site = c.post("/api/policy/decision", json=body, headers={"x-requested-with": "x", "sec-fetch-site": "cross-site"})
        assert site.status_code == 403
        ours = c.post("/api/policy/decision", json=body, headers={"x-requested-with": "x", "origin": platform_gw.url})
        assert ours.status_code == 200 and ours.json()["allowed"] is True
    # A token needs no such header: browsers never attach one by themselves.
    r = platform_gw.client(headers=platform_gw.bearer("alice", ["employees"])).post("/api/policy/decision", json=body)
    assert r.status_code == 200
    # and the refusal is on the record
    rec = platform_gw.wait_audit(lambda e: e.get("event", {}).get("action") == "http.request"
                                 and e.get("url", {}).get("path") == "/api/policy/decision"
                                 and e.get("event", {}).get("reason") == "csrf")  # fmt: skip
    assert rec["gateway"]["decision"] == "deny"


def test_test_alert_is_queued_as_background_work(platform_gw, hooks, mailbox):
    c = platform_gw.client(headers=platform_gw.bearer("sam", ["security"]))
    r = c.post("/api/alerts/test")
    assert r.status_code == 202 and r.json()["channels"] == ["email", "webhook"]
    hooks.wait_for(lambda h: h["json"]["kind"] == "test" and "sam" in h["json"]["summary"])
    mailbox.wait_for(lambda m: "Test alert requested by sam" in m["subject"])
    with platform_gw.signed_in("sam") as s:
        assert s.post("/api/alerts/test").status_code == 403  # cookie without the CSRF header
    assert platform_gw.client(headers=platform_gw.bearer("alice", ["employees"])).post("/api/alerts/test").status_code == 403
