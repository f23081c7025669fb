"""/metrics through a real gateway, parsed with the Prometheus text parser."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families


def scrape(platform_gw) -> dict[str, list]:
    r = platform_gw.client(headers=platform_gw.bearer("prometheus", ["metrics"])).get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_count_what_happened(platform_gw):
    before = scrape(platform_gw)
    with platform_gw.signed_in("alice") as c:
        for _ in range(3):
            assert c.get("/sales").status_code == 200
        assert c.get("/audit").status_code == 403
    failed = platform_gw.client()
    form = failed.get("/auth/login")
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    failed.post("/auth/login", data={"username": "metrics-nobody", "password": "x", "csrf_token": token, "next": "/"})
    time.sleep(0.3)
    after = scrape(platform_gw)

    req = "toolgate_http_requests_total"
    assert value(after["toolgate_http_requests"], req, status="200", tool="sales") - value(before["toolgate_http_requests"], req, status="200", tool="sales") >= 3
    assert value(after["toolgate_http_requests"], req, status="403", tool="audit") >= 1
    dec = "toolgate_policy_decisions_total"
    assert value(after["toolgate_policy_decisions"], dec, effect="allow", rule="dashboards-employees") >= 3
    assert value(after["toolgate_policy_decisions"], dec, effect="deny", rule="default-deny") >= 1
    sig = "toolgate_signins_total"
    assert value(after["toolgate_signins"], sig, result="success", method="password") >= 1
    assert value(after["toolgate_signins"], sig, result="failure", reason="invalid_credentials") >= 1

    assert "toolgate_audit_queue_depth" in after
    assert value(after["toolgate_audit_write_seconds"], "toolgate_audit_write_seconds_count") > 0
    assert value(after["toolgate_audit_event_latency_seconds"], "toolgate_audit_event_latency_seconds_count") > 0
    assert value(after["toolgate_audit_healthy"], "toolgate_audit_healthy") == 1
    assert value(after["toolgate_active_sessions"], "toolgate_active_sessions") >= 1
    assert value(after["toolgate_policy_rules"], "toolgate_policy_rules") > 10
    assert value(after["toolgate_audit_events"], "toolgate_audit_events_total", state="written") > 0


def test_metrics_need_a_token_or_group_the_policy_allows(platform_gw):
    assert platform_gw.client(headers={"accept": "application/json"}).get("/metrics").status_code == 401
    with platform_gw.signed_in("sam") as c:  # security, but not a metrics reader
        assert c.get("/metrics").status_code == 403
    r = platform_gw.client(headers=platform_gw.bearer("olga", ["operators"])).get("/metrics")
    assert r.status_code == 200
