"""Hardening headers on every response, error pages included.

A response that set its own Content-Security-Policy (the gateway's own pages
use a stricter one) keeps it; everything else gets the policy Streamlit's
frontend runs under (see ``gateway.csp``).  The ``Server`` banner is removed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import get_context
from gateway.csp import streamlit_csp

HSTS = b"max-age=63072000; includeSubDomains"

_BASE: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"permissions-policy",
        b"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
        b"microphone=(), payment=(), usb=(), interest-cohort=()",
    ),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-permitted-cross-domain-policies", b"none"),
)

# Hashed, immutable bundles may be cached; everything else is per-user data.
_CACHEABLE_PREFIXES = ("/static/", "/_gateway/static/")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https
        self.csp = streamlit_csp(https).encode()
        self.base = _BASE + ((b"strict-transport-security", HSTS),) if https else _BASE
        self.names = frozenset(k for k, _ in self.base) | {b"server", b"content-security-policy", b"cache-control"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        https = self.https or (ctx is not None and ctx.scheme == "https")
        base = self.base if https == self.https else _BASE + ((b"strict-transport-security", HSTS),)
        cacheable = scope["path"].startswith(_CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = message.get("headers", ())
                csp = cache = None
                kept = []
                for k, v in raw:
                    k = k.lower()
                    if k == b"content-security-policy":
                        csp = v
                    elif k == b"cache-control":
                        cache = v
                    elif k == b"set-cookie" and https and b"secure" not in v.lower():
                        # Streamlit's own cookies (XSRF) lack Secure; over https
                        # every cookie must carry it.
                        kept.append((k, v + b"; Secure"))
                    elif k not in self.names:
                        kept.append((k, v))
                    # else: ours win; upstream copies and the banner are dropped
                kept.extend(base)
                kept.append((b"content-security-policy", csp or self.csp))
                kept.append((b"cache-control", (cache or b"no-store") if cacheable else b"no-store"))
                message["headers"] = kept
            await send(message)

        await self.app(scope, receive, send_with_headers)
