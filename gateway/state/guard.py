"""Fail closed, politely, when the shared state is down.

Sits right outside the session layer.  Anything inside it (resolving a
session cookie, counting a sign-in attempt, revoking on sign-out) that needs
the shared state and cannot reach it raises ``StateUnavailable``; this turns
it into the branded 503 (HTML or JSON by ``Accept``, with the request id and
``Retry-After``), or closes a websocket with 1013 "try again later".  No
stack trace; at most one log line a second counts the refusals (the outage
itself is logged and audited once by the health monitor, and every refused
request has its own audit record with ``reason: state_unavailable``).  Requests that need no shared state
(anonymous pages, API tokens, health probes) are not affected.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import error_response

from .health import StateUnavailable

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 5
WS_TRY_AGAIN_LATER = 1013
DETAIL = "Sign-in and session checks are unavailable for a moment. Try again shortly."


class StateGuardMiddleware:
    def __init__(self, app: ASGIApp, *, brand: str = "Toolgate") -> None:
        self.app = app
        self.brand = brand
        self._refused = 0
        self._logged_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except StateUnavailable as exc:
            ctx = get_context(scope)
            if ctx is not None:
                ctx.decision = "deny"
                ctx.deny_reason = "state_unavailable"
            self._refused += 1
            now = time.monotonic()
            if now - self._logged_at >= 1.0:
                self._logged_at = now
                log.warning("state_unavailable_refused", refused=self._refused, reason=exc.reason,
                            request_id=ctx.request_id if ctx else None)  # fmt: skip
                self._refused = 0
            if scope["type"] == "websocket":
                # Before accept this refuses the handshake; after, it ends the socket.
                try:
                    await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": "state unavailable"})
                except Exception:  # noqa: BLE001 - the socket may be gone already
                    pass
                return
            if ctx is not None and ctx.status is not None:
                return  # the response had begun; nothing sensible can follow it
            response = error_response(
                scope, 503, detail=DETAIL, headers={"retry-after": str(RETRY_AFTER_S)}, brand=self.brand
            )
            await response(scope, receive, send)
