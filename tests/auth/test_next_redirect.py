"""``next`` after sign-in stays on this site, whatever is thrown at it."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth.routes import safe_next

from ._support import ALICE_PASSWORD, Env, login

BASE = "https://gw.test/auth/login"

EVIL = [
    "//evil.com",
    "///evil.com",
    "////evil.com/x",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "\\/evil.com",
    "https://evil.com",
    "http:evil.com",
    "HTTPS://evil.com/",
    "javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    " /\t/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r/evil.com",
    "/ /evil.com",
    "/%2F%2Fevil.com",
    "/%2f/evil.com",
    "/%5Cevil.com",
    "/%5C%5Cevil.com",
    "/%252F%252Fevil.com",
    "/%09/evil.com",
    "%2F%2Fevil.com",
    "evil.com",
    "data:text/html,<script>alert(1)</script>",
    "/\u3002evil.com",
    "/\uff0f\uff0fevil.com",
    "/\x00/evil.com",
    "/x" * 2000,
    "",
]


def on_site(location: str) -> bool:
    """What a browser would do: resolve against our URL and compare the origin."""
    if not location.startswith("/") or location.startswith("//"):
        return False
    if "\\" in location or any(ord(c) < 0x21 or ord(c) > 0x7E for c in location):
        return False
    return urlsplit(urljoin(BASE, location)).netloc == "gw.test"


@pytest.mark.parametrize("value", EVIL)
def test_evil_next_values_become_root(value: str) -> None:
    assert safe_next(value) == "/"


@pytest.mark.parametrize("value", ["/", "/sales", "/ops?tab=2#latency", "/a/b/c?x=%2F", "/policies?q=a+b"])
def test_good_next_values_are_kept(value: str) -> None:
    assert safe_next(value) == value


def test_sign_in_pages_are_not_a_next_target() -> None:
    assert safe_next("/auth/login?next=/x") == "/"
    assert safe_next("/auth/logout") == "/"


@given(st.text(max_size=80))
@settings(max_examples=800, deadline=None)
def test_any_text_yields_an_on_site_path(value: str) -> None:
    out = safe_next(value)
    assert out == "/" or (out == value and on_site(out))


_PIECES = st.sampled_from(["/", "\\", "//", "%2F", "%5C", "%25", "evil.com", "http:", ":", "\t", "\n", "@", ".", "?", "#", "a"])


@given(st.lists(_PIECES, max_size=10).map("".join))
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_adversarial_fragments_yield_an_on_site_path(value: str) -> None:
    out = safe_next(value)
    assert out == "/" or on_site(out)


@pytest.mark.parametrize("value", ["//evil.com", "/\\evil.com", "https://evil.com", "/%2F%2Fevil.com", "java\tscript:x"])
async def test_sign_in_redirect_stays_on_site(env: Env, value: str) -> None:
    async with env.client() as c:
        resp = await login(c, "alice", ALICE_PASSWORD, next_path=value)
        assert resp.status_code == 303
        assert resp.headers["location"] == "/"


async def test_sign_in_form_escapes_next(env: Env) -> None:
    async with env.client() as c:
        page = await c.get("/auth/login", params={"next": '/x"><b>hi</b>'})
        assert '"><b>' not in page.text
        assert 'value="/x&quot;&gt;&lt;b&gt;hi&lt;/b&gt;"' in page.text
