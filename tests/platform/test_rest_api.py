"""The FastAPI data API at /api/v1 behind the gateway: per-route policy, identity passed in, docs."""

from __future__ import annotations

import pytest

from tools_ui import data


def test_identity_is_the_gateways(platform_gw):
    r = platform_gw.client(headers=platform_gw.bearer("alice", ["employees"])).get("/api/v1/me")
    assert r.json() == {"user": "alice", "email": "", "groups": ["employees"], "auth_method": "token"}
    with platform_gw.signed_in("aud") as c:
        # A forged identity header changes nothing: the gateway strips it.
        r = c.get("/api/v1/me", headers={"x-gateway-user": "sam", "x-gateway-groups": "security"})
    assert r.json()["user"] == "aud" and r.json()["auth_method"] == "password"


def test_sales_figures_match_the_dashboard_data(platform_gw):
    c = platform_gw.client(headers=platform_gw.bearer("alice", ["employees"]))
    kpis = c.get("/api/v1/sales/kpis", params={"months": 3, "region": "NA,EMEA"}).json()
    d = data.make_sales()
    base = data.default_filter(d, 3)
    expected = data.sales_kpis(d, data.SalesFilter(("NA", "EMEA"), base.start, base.end))
    assert kpis["regions"] == ["NA", "EMEA"]
    assert kpis["revenue"]["value"] == pytest.approx(expected["revenue"].value)
    regions = c.get("/api/v1/sales/revenue/by-region").json()
    assert {r["region"] for r in regions} == set(data.REGIONS)
    assert sum(r["share"] for r in regions) == pytest.approx(1.0)
    assert len(c.get("/api/v1/sales/top-accounts", params={"n": 4}).json()) == 4
    assert [s["stage"] for s in c.get("/api/v1/sales/pipeline").json()] == list(data.STAGES)
    assert c.get("/api/v1/sales/kpis", params={"region": "MARS"}).status_code == 422


def test_ops_figures(platform_gw):
    c = platform_gw.client(headers=platform_gw.bearer("olga", ["operators"]))
    slo = c.get("/api/v1/ops/slo").json()
    assert [s["service"] for s in slo] == list(data.SERVICE_NAMES)
    open_incidents = c.get("/api/v1/ops/incidents", params={"status": "open"}).json()
    assert open_incidents and all(i["resolved"] is None for i in open_incidents)
    latency = c.get("/api/v1/ops/latency", params={"service": "checkout", "hours": 6}).json()
    assert 6 <= len(latency) <= 7 and all(p["p50_ms"] < p["p95_ms"] < p["p99_ms"] for p in latency)
    # operators get ops figures, not sales figures: per route, by policy
    assert c.get("/api/v1/sales/kpis").status_code == 403


def test_each_route_is_decided_by_policy(platform_gw):
    aud = platform_gw.client(headers=platform_gw.bearer("aud", ["auditors"]))
    assert aud.get("/api/v1/me").status_code == 200
    r = aud.get("/api/v1/sales/kpis")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # path tricks are decided on the canonical path
    assert aud.get("/api/v1/me/../sales/kpis").status_code in (308, 403)
    assert aud.get("/api/v1/%73ales/kpis").status_code == 403
    # no writes: the policy only allows GET
    alice = platform_gw.client(headers=platform_gw.bearer("alice", ["employees"]))
    assert alice.post("/api/v1/sales/kpis", json={}).status_code == 403


def test_openapi_and_docs_are_served_from_here(platform_gw):
    c = platform_gw.client(headers=platform_gw.bearer("aud", ["auditors"]))
    spec = c.get("/api/v1/openapi.json").json()
    assert "/sales/kpis" in spec["paths"] and "/ops/slo" in spec["paths"]
    page = c.get("/api/v1/docs")
    assert page.status_code == 200
    # Swagger UI from this gateway, its start-up code in a file: nothing inline, nothing from a CDN
    assert "<script>" not in page.text and "cdn" not in page.text.lower()
    assert 'src="/api/v1/docs/assets/swagger-ui-bundle.js"' in page.text
    assert 'src="/api/v1/docs/init.js"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    js = c.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "SwaggerUIBundle" in js.text[:1000]
    init = c.get("/api/v1/docs/init.js")
    assert init.status_code == 200 and init.headers["content-type"].startswith("text/javascript")
    assert "validatorUrl: null" in init.text
