"""Turn any crash below this layer into the branded 500.

It sits inside the security-headers and audit layers so that the 500 a
crash produces is hardened and recorded like every other response.  The
traceback goes to the server log with the request id; the client sees only
the id.
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import send_error

log = structlog.get_logger(__name__)


class ErrorBoundaryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        if ctx is None:
            raise RuntimeError("ErrorBoundaryMiddleware needs the request-context layer outside it")
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception(
                "unhandled_error",
                request_id=ctx.request_id,
                path=scope.get("path"),
                scope_type=scope["type"],
            )
            ctx.extra["error"] = True
            if ctx.response_started:
                # Headers are out; all we can do is end the exchange.
                if scope["type"] == "websocket":
                    try:
                        await send({"type": "websocket.close", "code": 1011})
                    except Exception:  # noqa: BLE001 - the socket may be gone already
                        pass
                return
            await send_error(scope, receive, send, 500, ws_close_code=1011)
