"""A real Chromium (Debian's, through Playwright) against a real gateway."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.app.conftest import USERS, Gateway, running_gateway
from tests.helpers import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@dataclass
class PageLog:
    """Everything the page said that a reviewer would want to know."""

    console: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page) -> None:  # type: ignore[no-untyped-def]
        def on_console(msg) -> None:  # type: ignore[no-untyped-def]
            text = f"{msg.type}: {msg.text}"
            self.console.append(text)
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                self.csp_violations.append(text)

        page.on("console", on_console)
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("request", lambda r: self.requests.append(r.url))


# Module scope: the sync Playwright API keeps an event loop running in this
# thread while it is open, which would starve pytest-asyncio's tests after it.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def web_gateway(tmp_path_factory) -> Iterator[Gateway]:
    # Browse by the name the browser would use, so Host and Origin line up.
    with running_gateway(tmp_path_factory.mktemp("web"), host="localhost") as gw:
        yield gw


def sign_in(page, gateway: Gateway, user: str, next_path: str = "/") -> None:  # type: ignore[no-untyped-def]
    page.goto(gateway.url + next_path)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][0])
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.url}{next_path}*")


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
