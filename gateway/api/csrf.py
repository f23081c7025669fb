"""Cross-site request forgery protection for the gateway's JSON APIs.

A browser sends the session cookie with any request to us, including a form
or ``fetch`` another site starts.  So an unsafe method (anything but GET,
HEAD, OPTIONS) carried by a cookie session (or an identity-aware proxy's
assertion, which a browser also sends along) must prove it came from our own
pages: it needs an ``X-Requested-With`` header (no other site can set a
custom header without a CORS preflight, and the gateway answers none), and
when the browser names the origin (``Origin``, ``Sec-Fetch-Site``) it must be
ours.  Bearer-token requests need none of this: a browser never attaches a
token on its own.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADER = b"x-requested-with"


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def csrf_problem(scope: Scope) -> str | None:
    """Why this request must be refused as a possible forgery, or None."""
    if scope.get("type") != "http" or scope.get("method", "GET") in SAFE_METHODS:
        return None
    ctx = get_context(scope)
    identity = ctx.identity if ctx is not None else None
    if identity is not None and identity.auth_method == "token":
        return None
    if not (_header(scope, HEADER) or "").strip():
        return "missing X-Requested-With header"
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request ({site})"
    origin = _header(scope, b"origin")
    if origin is not None and origin != "null" and ctx is not None:
        if origin.lower() != f"{ctx.scheme}://{ctx.host}".lower():
            return "foreign Origin"
    return None


def csrf_refusal(scope: Scope) -> Response | None:
    """A 403 for a forged-looking request (recorded on the request context), or None."""
    problem = csrf_problem(scope)
    if problem is None:
        return None
    ctx = get_context(scope)
    if ctx is not None:
        ctx.decision, ctx.deny_reason = "deny", "csrf"
    return error_response(
        scope, 403, detail=f"Cross-site request refused: {problem}. Send X-Requested-With from our own pages, or use an API token."
    )


class CsrfGuard:
    """Pure-ASGI wrapper applying :func:`csrf_refusal` to everything below it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = csrf_refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)
