"""What a person sees: sign-in, the tools, the navigation, under the real CSP."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.app.conftest import Gateway
from tests.browser.conftest import PageLog, shot, sign_in

pytestmark = pytest.mark.browser


def outside_requests(log: PageLog, gateway: Gateway) -> list[str]:
    ours = urlsplit(gateway.url).netloc
    return [u for u in log.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != ours]


def wait_for_streamlit(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_text(text).first.wait_for(timeout=30_000)


def test_sign_in_home_page_switch_without_csp_violations(browser, web_gateway: Gateway):
    context = browser.new_context()
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(web_gateway.url + "/")
    assert "/auth/login" in page.url
    shot(page, "sign-in")
    sign_in(page, web_gateway, "alice")
    wait_for_streamlit(page, "Welcome, alice")
    shot(page, "home-alice")

    # Page switch through the sidebar: travels over the websocket.
    page.get_by_role("link", name="Sales").first.click()
    wait_for_streamlit(page, "Revenue by month")
    assert page.url.endswith("/sales")
    page.wait_for_timeout(1500)  # let charts render (Vega runs its own code)
    shot(page, "sales")

    page.get_by_role("link", name="Operations").first.click()
    wait_for_streamlit(page, "Operations")
    page.wait_for_timeout(1500)
    shot(page, "ops")

    assert log.csp_violations == [], log.csp_violations
    assert outside_requests(log, web_gateway) == []
    assert not [f for f in log.failed if urlsplit(f.split()[0]).netloc != urlsplit(web_gateway.url).netloc]
    context.close()


def test_navigation_shows_only_allowed_tools(browser, web_gateway: Gateway):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, web_gateway, "alice")
    wait_for_streamlit(page, "Welcome, alice")
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Operations").first.wait_for()
    assert sidebar.get_by_text("Sales").count() >= 1
    assert sidebar.get_by_text("Audit viewer").count() == 0
    assert sidebar.get_by_text("Policy editor").count() == 0
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, web_gateway, "sam")
    wait_for_streamlit(page, "Welcome, sam")
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Audit viewer").first.wait_for()
    assert sidebar.get_by_text("Policy editor").count() >= 1
    shot(page, "home-sam")
    context.close()


def test_st_user_is_the_verified_user_despite_forged_headers(browser, web_gateway: Gateway):
    context = browser.new_context(
        extra_http_headers={"X-Gateway-User": "mallory", "X-Gateway-Groups": "security", "X-Gateway-Email": "m@evil.example"}
    )
    page = context.new_page()
    sign_in(page, web_gateway, "alice")
    wait_for_streamlit(page, "Welcome, alice")
    # Streamlit renders the page element by element: wait for the last of
    # the "Who I am" card before reading what it says.
    wait_for_streamlit(page, "Signed in with")
    body = page.locator("body").inner_text()
    assert "mallory" not in body and "m@evil.example" not in body
    assert "alice@example.com" in body
    # The forged groups did not open a security tool either.
    page.goto(web_gateway.url + "/policies")
    assert "Access not granted" in page.locator("body").inner_text()
    context.close()


def test_forbidden_page_by_url_shows_no_page_content(browser, web_gateway: Gateway):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, web_gateway, "alice")
    wait_for_streamlit(page, "Welcome, alice")
    response = page.goto(web_gateway.url + "/audit")
    assert response is not None and response.status == 403
    text = page.locator("body").inner_text()
    assert "Access not granted" in text and "security@example.com" in text
    shot(page, "audit-denied-alice")
    context.close()
