"""Home as an employee sees it: who I am, my tools, what I may request, and my own recent activity."""

from __future__ import annotations

import pytest

from tests.app.conftest import Gateway
from tests.browser.conftest import shot, sign_in

pytestmark = pytest.mark.browser


def activity_text(page, must_contain: str) -> str:  # type: ignore[no-untyped-def]
    """The activity panel's text once ``must_contain`` shows (the trail is written asynchronously)."""
    box = page.locator(".st-key-my-activity")
    for _ in range(3):
        try:
            box.get_by_text(must_contain).first.wait_for(timeout=5_000)
            return box.inner_text()
        except Exception:  # noqa: BLE001 - not on disk yet: load the page again
            page.reload()
            page.get_by_text("My recent activity").first.wait_for(timeout=30_000)
    return box.inner_text()


def test_home_shows_who_i_am_my_tools_and_only_my_activity(browser, web_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    with web_gateway.signed_in("sam") as sam:
        assert sam.get("/live").status_code == 200  # sam's event, which alice must not see

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, web_gateway, "alice", "/sales")
    page.get_by_text("Revenue by month").first.wait_for(timeout=30_000)
    page.goto(web_gateway.url + "/")
    page.get_by_text("Welcome, alice").first.wait_for(timeout=30_000)
    shot(page, "home-top-alice")

    text = activity_text(page, "/sales")
    assert "Opened Sales" in text and "Signed in (password)" in text
    assert "/live" not in text and "sam" not in text
    assert "_stcore" not in text  # the frontend's own plumbing is not "activity"

    body = page.locator("body").inner_text()
    assert "alice@example.com" in body and "password" in body and "Session ends" in body
    assert "Open Sales" in body and "Open Operations" in body and "Open Policy editor" not in body
    assert "Tools you can request" in body and "security@example.com" in body
    assert page.get_by_role("link", name="Sign out").count() >= 1
    page.locator(".st-key-my-activity").scroll_into_view_if_needed()
    shot(page, "home-activity-alice")
    context.close()


def test_home_fits_a_narrow_window(browser, web_gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    sign_in(page, web_gateway, "alice")
    page.get_by_text("Welcome, alice").first.wait_for(timeout=30_000)
    page.get_by_text("My recent activity").first.wait_for()
    page.wait_for_timeout(500)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "home-narrow")
    page.locator(".st-key-my-activity").scroll_into_view_if_needed()
    shot(page, "home-narrow-activity")
    context.close()
