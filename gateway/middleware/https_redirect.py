"""Plain-http requests are sent to https when the gateway is served over https.

Applies when the browser-facing URL is https (``server.public_url``), whether
TLS ends here or at a trusted proxy that says ``X-Forwarded-Proto: http``.
Health probes are exempt: load balancers probe over plain http.  The target
is built from ``public_url``, never from the request's Host.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import send_error
from gateway.paths import PROBE_PATHS


class HTTPSRedirectMiddleware:
    def __init__(self, app: ASGIApp, *, public_url: str) -> None:
        if not public_url.startswith("https://"):
            raise ValueError("public_url must be https for the redirect to make sense")
        self.app = app
        self.base = public_url.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = get_context(scope)
        if scope["type"] not in ("http", "websocket") or ctx is None or ctx.scheme == "https":
            await self.app(scope, receive, send)
            return
        if scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" or scope["method"] not in ("GET", "HEAD"):
            # A body sent over plain http has already crossed the wire in clear;
            # refuse instead of silently re-posting it.
            await send_error(scope, receive, send, 400, detail="Use https.")
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = self.base + scope.get("raw_path", scope["path"].encode()).decode("latin-1") + (f"?{query}" if query else "")
        await RedirectResponse(target, status_code=308)(scope, receive, send)


class RedirectOnlyApp:
    """The whole app of the plain-http listener next to a TLS one."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if not path.startswith("/") or path.startswith("//"):
            path = "/"
        query = scope.get("query_string", b"").decode("latin-1")
        headers = [
            (b"location", (self.base + path + (f"?{query}" if query else "")).encode("latin-1")),
            (b"content-length", b"0"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 308, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
