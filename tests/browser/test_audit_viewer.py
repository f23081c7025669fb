"""An auditor in a real browser: filters the trail, exports what the filter shows, sees tampering."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests.app.conftest import Gateway, running_gateway
from tests.browser.conftest import PageLog, browser, shot, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def audit_gateway(tmp_path_factory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("auditview"), host="localhost") as gw:
        yield gw


def trail_records(gw: Gateway) -> list[dict]:
    path = gw.config.parent / "audit" / "audit.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def denials_of(gw: Gateway, user: str) -> int:
    return sum(1 for r in trail_records(gw) if (r.get("user") or {}).get("name") == user and (r.get("gateway") or {}).get("decision") == "deny")


def wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def pick(page, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Choose ``value`` in the multiselect with widget key ``key``."""
    box = page.locator(f".st-key-{key} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")


def metric(page, label: str) -> str:  # type: ignore[no-untyped-def]
    m = page.locator("[data-testid=stMetric]", has_text=label).first
    return m.locator("[data-testid=stMetricValue]").inner_text().strip()


def edit_middle_record(path: Path) -> int:
    """Rewrite one byte of a middle line in place (what a careless or malicious admin might do)."""
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    n = len(lines) // 2
    start = sum(len(x) for x in lines[:n])
    at = start + lines[n].index(b'"action":"') + len(b'"action":"')
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(b"X" if old != b"X" else b"Y")
    return n + 1


def test_auditor_filters_exports_and_sees_tampering(browser, audit_gateway: Gateway):  # noqa: F811
    gw = audit_gateway
    # Something to find: alice is refused the audit viewer, twice, and a stranger fails to sign in.
    with gw.signed_in("alice") as c:
        assert c.get("/audit").status_code == 403
        assert c.get("/live").status_code == 403
    assert wait_until(lambda: denials_of(gw, "alice") >= 2)
    expected = denials_of(gw, "alice")

    context = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    sign_in(page, gw, "aud", "/audit")
    badge = page.locator(".st-key-audit_integrity")
    badge.get_by_text("Chain intact").wait_for(timeout=30_000)
    assert "records" in badge.inner_text()

    pick(page, "audit_f_users", "alice")
    pick(page, "audit_f_decisions", "deny")
    # Only "Matching events" tells the filter is applied: with just the user
    # filter it counts alice's sign-in too, and another metric (denials) can
    # already show the expected number.
    page.wait_for_function(
        """n => [...document.querySelectorAll('[data-testid=stMetric]')].some(m =>
                 m.innerText.includes('Matching events')
                 && m.querySelector('[data-testid=stMetricValue]').innerText.trim() === String(n))""",
        arg=expected,
        timeout=15_000,
    )
    assert metric(page, "Matching events") == str(expected)
    table = page.locator("[data-testid=stDataFrame]").first
    table.wait_for()
    # Selecting a row shows the original record, chain value and all.
    page.wait_for_timeout(500)  # the grid draws on a canvas
    table.click(position={"x": 12, "y": 35 + 17})
    record = page.locator(".st-key-audit_record")
    record.get_by_text('"chain"').first.wait_for(timeout=10_000)
    assert '"alice"' in record.inner_text() and "audit.jsonl:" in record.inner_text()
    shot(page, "audit-viewer-filtered-aud")

    page.get_by_role("tab", name=re.compile("Export")).click()
    button = page.get_by_role("button", name=re.compile(rf"Download {expected} events as CSV"))
    button.wait_for(timeout=10_000)
    shot(page, "audit-viewer-export-aud")
    with page.expect_download(timeout=20_000) as dl:
        button.click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(rows) == expected
    assert all(r["user"] == "alice" and r["decision"] == "deny" for r in rows)
    assert {r["path"] for r in rows} >= {"/audit", "/live"}
    # The export is itself on record, with its filters and row count.
    assert wait_until(
        lambda: any(
            (r["event"]["action"] == "audit.exported" and r["user"]["name"] == "aud"
             and r["gateway"]["details"]["rows"] == expected and r["gateway"]["details"]["filters"]["users"] == ["alice"])
            for r in trail_records(gw) if r["event"]["action"] == "audit.exported"
        )
    )  # fmt: skip

    # Someone edits one byte of a record on disk: the badge turns red and names it.
    line = edit_middle_record(gw.config.parent / "audit" / "audit.jsonl")
    page.get_by_role("button", name=re.compile("Verify now")).click()
    badge.get_by_text("Chain broken").wait_for(timeout=20_000)
    text = badge.inner_text()
    assert f"audit.jsonl:{line}" in text and "edited" in text
    shot(page, "audit-viewer-tampered-aud")
    assert log.csp_violations == [], log.csp_violations
    context.close()


def test_auditor_sees_charts_and_a_record_in_a_narrow_window(browser, audit_gateway: Gateway):  # noqa: F811
    context = browser.new_context(viewport={"width": 480, "height": 3400})
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    sign_in(page, audit_gateway, "aud", "/audit")
    page.locator(".st-key-audit_integrity").wait_for(timeout=30_000)
    page.get_by_role("tab", name=re.compile("Charts")).click()
    heading = page.get_by_text("Requests and denials over time")
    heading.wait_for()
    heading.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # Vega draws
    shot(page, "audit-viewer-charts-narrow")
    assert log.csp_violations == [], log.csp_violations
    context.close()
