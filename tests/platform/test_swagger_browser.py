"""Swagger UI at /api/v1/docs in a real Chromium, under the gateway's CSP: no violations,
nothing fetched from elsewhere, and "Try it out" works with the signed-in session."""

from __future__ import annotations

import pytest

from tests.app.conftest import USERS
from tests.browser.conftest import PageLog, browser, shot  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.browser


def test_api_docs_run_under_the_csp(browser, platform_gw):  # noqa: F811
    context = browser.new_context()
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    try:
        page.goto(platform_gw.url + "/auth/login?next=/api/v1/docs")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", USERS["alice"][0])
        page.click("button[type=submit]")
        page.wait_for_url(platform_gw.url + "/api/v1/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        assert "/sales/kpis" in page.inner_text("#swagger-ui")

        block = page.locator(".opblock", has_text="/me").first
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        block.locator("button.execute").click()
        page.wait_for_selector(".opblock .responses-table .response-col_status", timeout=15_000)
        body = block.locator(".live-responses-table .microlight").first.inner_text()
        assert '"user": "alice"' in body and '"auth_method": "password"' in body
        shot(page, "platform-api-docs")
    finally:
        context.close()
    assert log.csp_violations == []
    outside = [u for u in log.requests if not u.startswith(platform_gw.url) and not u.startswith("data:")]
    assert outside == []
    assert log.failed == []
