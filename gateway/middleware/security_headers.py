"""Hardening headers on every response, error pages included.

Two sets, chosen by the response's ``Content-Type``:

- **Documents and scripts** (HTML, XHTML, JavaScript) get the policy
  Streamlit's frontend runs under (see ``gateway.csp``) and the
  document-level policies (Permissions-Policy, COOP).  Scripts count because
  a worker started from a same-origin script runs under that script's own
  response policy.
- **Everything else** (JSON, text, CSS, images, SVG, fonts, no type at all)
  gets ``default-src 'none'; frame-ancestors 'none'``: nothing it contains
  may load or run anything, should a browser ever render it as a page (an SVG
  opened directly, a body sniffed as HTML).  This is stricter, not looser,
  and it spares every API answer ~700 bytes of policy that only a document
  can use.

A ``304 Not Modified`` carries the document set: browsers merge a 304's
headers into the cached response, whose type the 304 does not name.  A
response that set its own Content-Security-Policy (the gateway's own pages
use a stricter one) keeps it.  The ``Server`` banner is removed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import get_context
from gateway.csp import streamlit_csp

HSTS = b"max-age=63072000; includeSubDomains"
STRICT_CSP = b"default-src 'none'; frame-ancestors 'none'"

# On every response.
_EVERY: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# Policies only a document (or a worker's script) can act on.
_DOCUMENT_ONLY: tuple[tuple[bytes, bytes], ...] = (
    (
        b"permissions-policy",
        (
            b"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
            b"microphone=(), payment=(), usb=(), interest-cohort=()"
        ),
    ),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"x-permitted-cross-domain-policies", b"none"),
)
_HSTS = ((b"strict-transport-security", HSTS),)

DOCUMENT_TYPES = frozenset(
    {
        b"text/html",
        b"application/xhtml+xml",
        b"text/javascript",
        b"application/javascript",
        b"application/x-javascript",
        b"text/ecmascript",
        b"application/ecmascript",
    }
)

# Hashed, immutable bundles may be cached; everything else is per-user data.
_CACHEABLE_PREFIXES = ("/static/", "/_gateway/static/")
_NOT_MODIFIED = 304


def is_document(content_type: bytes | None, status: int) -> bool:
    """Whether a response gets the document header set (see the module doc)."""
    if status == _NOT_MODIFIED:
        return True
    if not content_type:
        return False
    return content_type.split(b";", 1)[0].strip().lower() in DOCUMENT_TYPES


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https
        self.csp = streamlit_csp(https).encode()
        # (document headers, other headers) for plain http and for https.
        self._sets = {
            scheme_https: (
                _EVERY + _DOCUMENT_ONLY + (_HSTS if scheme_https else ()),
                _EVERY + (_HSTS if scheme_https else ()),
            )
            for scheme_https in (False, True)
        }
        # Names ours replace: every header either set can add, the banner, CSP and caching.
        self.names = frozenset(k for k, _ in self._sets[True][0]) | {
            b"server",
            b"content-security-policy",
            b"cache-control",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        https = self.https or (ctx is not None and ctx.scheme == "https")
        document_set, other_set = self._sets[https]
        cacheable = scope["path"].startswith(_CACHEABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                csp = cache = ctype = None
                kept = []
                for k, v in message.get("headers", ()):
                    k = k.lower()
                    if k == b"content-type":
                        ctype = v
                        kept.append((k, v))
                    elif k == b"content-security-policy":
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
                if is_document(ctype, message["status"]):
                    kept.extend(document_set)
                    kept.append((b"content-security-policy", csp or self.csp))
                else:
                    kept.extend(other_set)
                    kept.append((b"content-security-policy", csp or STRICT_CSP))
                kept.append((b"cache-control", (cache or b"no-store") if cacheable else b"no-store"))
                message["headers"] = kept
            await send(message)

        await self.app(scope, receive, send_with_headers)
