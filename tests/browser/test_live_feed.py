"""The live security feed in a real browser: pushed over the gateway's websocket, under the CSP, reconnecting."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from tests.app.conftest import Gateway, running_gateway
from tests.browser.conftest import PageLog, browser, shot, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

FEED = "[data-toolgate-live]"


@pytest.fixture(scope="module")
def feed_gateway(tmp_path_factory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("livefeed"), host="localhost") as gw:
        yield gw


def test_denial_in_another_browser_shows_up_live_without_csp_violations(browser, feed_gateway: Gateway):  # noqa: F811
    gw = feed_gateway
    sam_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = sam_ctx.new_page()
    log = PageLog()
    log.attach(page)
    sign_in(page, gw, "sam", "/live")
    page.locator(f"{FEED}[data-state=live]").wait_for(timeout=30_000)
    # The widget is updated in place by its script, not re-rendered by Streamlit: the node stays.
    page.evaluate(f"document.querySelector('{FEED}').dataset.marker = 'first-render'")

    alice_ctx = browser.new_context()
    alice = alice_ctx.new_page()
    sign_in(alice, gw, "alice")
    response = alice.goto(gw.url + "/audit")
    t0 = time.monotonic()
    assert response is not None and response.status == 403
    item = page.locator("li.tg-live-item[data-kind=denial]", has_text="alice denied /audit").first
    item.wait_for(timeout=2_000)
    assert time.monotonic() - t0 < 2.0
    assert "403" in item.inner_text()
    shot(page, "live-feed-sam")

    # A dropped socket is noticed, shown, and re-opened; what happens meanwhile is not lost.
    page.evaluate("window.__toolgateLiveFeed.feeds[0].ws.close()")
    page.locator(f"{FEED}[data-state=reconnecting], {FEED}[data-state=connecting]").first.wait_for(timeout=2_000)
    alice.goto(gw.url + "/policies")
    page.locator(f"{FEED}[data-state=live]").wait_for(timeout=10_000)
    page.locator("li.tg-live-item[data-kind=denial]", has_text="alice denied /policies").first.wait_for(timeout=5_000)
    assert page.locator("li.tg-live-item", has_text="alice denied /audit").count() == 1  # resumed, not replayed
    assert page.locator(f"{FEED}[data-marker=first-render]").count() == 1
    assert log.csp_violations == [], log.csp_violations
    alice_ctx.close()
    sam_ctx.close()


def test_feed_in_a_narrow_window_and_the_guard_for_others(browser, feed_gateway: Gateway):  # noqa: F811
    gw = feed_gateway
    ctx = browser.new_context(viewport={"width": 420, "height": 900})
    page = ctx.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(gw.url + "/auth/login")
    page.fill("input[name=username]", "mallory")
    page.fill("input[name=password]", "not-a-password")
    page.click("button[type=submit]")
    sign_in(page, gw, "sam", "/live")
    page.locator(f"{FEED}[data-state=live]").wait_for(timeout=30_000)
    # The backlog brings what happened before the page opened.
    page.locator("li.tg-live-item[data-kind=signin_failure]", has_text="mallory").first.wait_for(timeout=5_000)
    shot(page, "live-feed-narrow")
    assert log.csp_violations == [], log.csp_violations
    ctx.close()

    # An auditor gets the "not allowed" view, and no feed.
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, gw, "aud")
    response = page.goto(gw.url + "/live")
    assert response is not None and response.status == 403
    assert page.locator(FEED).count() == 0
    ctx.close()
