"""Audit middleware: one audit event per HTTP request and per websocket session.

Pure ASGI (never BaseHTTPMiddleware): it wraps ``send`` to see the status and
count body bytes, and for websockets wraps ``receive`` and ``send`` to count
messages and catch the close code.  The event is emitted when the exchange
ends, from the RequestContext that the outer layers filled in
(``scope["gateway"]``): identity, policy decision, tool.  Bodies are never
read or recorded.

Fail closed: when the trail is unhealthy and ``audit.fail_closed`` is set, the
request is refused before the app runs - HTTP gets a 503 (from
``unavailable_response``), a websocket handshake is closed with 1013 ("try
again later") - so nothing is served that cannot be recorded.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, MutableMapping

import anyio
import structlog

from gateway.audit import AuditTrail, AuditUnavailable
from gateway.context import get_context

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WS_TRY_AGAIN_LATER = 1013
_LOG_EVERY_S = 1.0


def json_unavailable(scope: Scope) -> ASGIApp:
    """Default 503: a minimal JSON body (the lead's errors.py can supply a branded one)."""
    ctx = get_context(scope)
    rid = ctx.request_id if ctx is not None else ""
    body = b'{"error":"service_unavailable","message":"The audit trail cannot record requests right now; try again shortly.","request_id":"' + rid.encode("ascii", "replace").replace(b'"', b"") + b'"}'

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"retry-after", b"5"),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class AuditMiddleware:
    """Emit ``http.request`` / ``websocket.session`` events; refuse traffic when the trail is down.

    ``unavailable_response(scope)`` returns the ASGI app that answers an HTTP
    request refused because the trail is unhealthy (default: JSON 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        trail: AuditTrail,
        unavailable_response: Callable[[Scope], ASGIApp] = json_unavailable,
    ) -> None:
        if not callable(getattr(trail, "emit", None)):
            raise TypeError("AuditMiddleware needs an AuditTrail (an object with emit and healthy)")
        self.app = app
        self.trail = trail
        self.unavailable_response = unavailable_response
        self._last_refusal_log = 0.0
        self._refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = scope["type"]
        if t == "http":
            await self._http(scope, receive, send)
        elif t == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ------------------------------------------------------------ http

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail = self.trail
        if trail.fail_closed and not trail.healthy:
            self._note_refusal(scope)
            await self.unavailable_response(scope)(scope, receive, send)
            return
        started = time.perf_counter()
        ctx = get_context(scope)
        if ctx is not None:
            # The request-context layer outside us already watches the
            # response (status, bytes): no second send wrapper on the hot path.
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                status = ctx.status or (499 if isinstance(exc, anyio.get_cancelled_exc_class()) else 500)
                self._emit_http(scope, status, ctx.bytes_sent, started)
                raise
            self._emit_http(scope, ctx.status or 500, ctx.bytes_sent, started)
            return
        status = 0
        nbytes = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, nbytes
            if message["type"] == "http.response.body":
                nbytes += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            # Nothing sent yet: the server (or Starlette's ServerErrorMiddleware
            # outside us) answers 500; a cancelled request means the client
            # went away (499, as nginx logs it).  Record what the client got.
            if not status:
                status = 499 if isinstance(exc, anyio.get_cancelled_exc_class()) else 500
            self._emit_http(scope, status, nbytes, started)
            raise
        # An app that returns without a response gets a 500 from the server.
        self._emit_http(scope, status or 500, nbytes, started)

    def _emit_http(self, scope: Scope, status: int, nbytes: int, started: float) -> None:
        ctx = get_context(scope)
        try:
            if ctx is None:
                client = scope.get("client")
                self.trail.emit(
                    "http.request",
                    client_ip=client[0] if client else None,
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status or None,
                    bytes=nbytes,
                    duration_ms=(time.perf_counter() - started) * 1000.0,
                )
                return
            ctx.status = status or None
            ctx.bytes_sent = nbytes
            ident = ctx.identity
            if ident is not None:
                user, email, groups, auth_method, session_id = ident.user, ident.email, ident.groups, ident.auth_method, ident.session_id
            else:
                user = email = groups = auth_method = session_id = None
            self.trail.emit(
                "http.request",
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
                user=user,
                email=email,
                groups=groups,
                auth_method=auth_method,
                session_id=session_id,
                method=scope.get("method"),
                path=ctx.path,
                tool=ctx.tool,
                status=status or None,
                bytes=nbytes,
                duration_ms=(time.perf_counter() - ctx.started) * 1000.0,
                decision=ctx.decision,
                rule_id=ctx.rule_id,
                policy_version=ctx.policy_version,
                user_agent=ctx.user_agent,
                reason=ctx.deny_reason,
                details=ctx.extra.get("audit") or None,
            )
        except AuditUnavailable as exc:
            # The response is already on its way; all that is left is to say so loudly.
            log.error(
                "audit_event_lost",
                action="http.request",
                request_id=ctx.request_id if ctx else None,
                path=ctx.path if ctx else scope.get("path"),
                status=status,
                reason=exc.reason,
            )

    # ------------------------------------------------------------ websocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail = self.trail
        if trail.fail_closed and not trail.healthy:
            self._note_refusal(scope)
            # Close before accept: the handshake is refused (1013 = try again later).
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": "audit unavailable"})
            return
        started = time.perf_counter()
        st = _WsState()

        async def receive_wrapper() -> Message:
            message = await receive()
            mt = message["type"]
            if mt == "websocket.receive":
                st.messages_in += 1
                data = message.get("bytes") or message.get("text") or b""
                st.bytes_in += len(data)
            elif mt == "websocket.disconnect":
                if st.close_code is None:
                    st.close_code = message.get("code", 1005)
                    st.closed_by = "client"
            return message

        async def send_wrapper(message: Message) -> None:
            mt = message["type"]
            if mt == "websocket.send":
                st.messages_out += 1
                data = message.get("bytes") or message.get("text") or b""
                st.bytes_out += len(data)
            elif mt == "websocket.accept":
                st.accepted = True
            elif mt == "websocket.close":
                if st.close_code is None:
                    st.close_code = message.get("code", 1000)
                    st.closed_by = "server"
            elif mt == "websocket.http.response.start":
                st.denial_status = message.get("status")
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException:
            if st.close_code is None:
                st.close_code = 1011
                st.closed_by = "server"
            self._emit_ws(scope, st, started)
            raise
        self._emit_ws(scope, st, started)

    def _emit_ws(self, scope: Scope, st: "_WsState", started: float) -> None:
        ctx = get_context(scope)
        ident = ctx.identity if ctx is not None else None
        status = 101 if st.accepted else (st.denial_status or 403)
        details = {
            "close_code": st.close_code,
            "closed_by": st.closed_by,
            "accepted": st.accepted,
            "messages_in": st.messages_in,
            "messages_out": st.messages_out,
            "bytes_in": st.bytes_in,
        }
        client = scope.get("client")
        try:
            self.trail.emit(
                "websocket.session",
                outcome="success" if st.accepted else "failure",
                request_id=ctx.request_id if ctx else None,
                client_ip=ctx.client_ip if ctx else (client[0] if client else None),
                user=ident.user if ident else None,
                email=ident.email if ident else None,
                groups=ident.groups if ident else None,
                auth_method=ident.auth_method if ident else None,
                session_id=ident.session_id if ident else None,
                path=ctx.path if ctx else scope.get("path"),
                tool=ctx.tool if ctx else None,
                status=status,
                bytes=st.bytes_out,
                duration_ms=(time.perf_counter() - (ctx.started if ctx else started)) * 1000.0,
                decision=ctx.decision if ctx else None,
                rule_id=ctx.rule_id if ctx else None,
                policy_version=ctx.policy_version if ctx else None,
                user_agent=ctx.user_agent if ctx else None,
                reason=ctx.deny_reason if ctx else None,
                details=details,
            )
        except AuditUnavailable as exc:
            log.error("audit_event_lost", action="websocket.session", request_id=ctx.request_id if ctx else None, reason=exc.reason)

    # ------------------------------------------------------------ helpers

    def _note_refusal(self, scope: Scope) -> None:
        # Refusals cannot be audited (the trail is what failed), so they are
        # logged instead, at most once a second with a count.
        self._refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= _LOG_EVERY_S:
            self._last_refusal_log = now
            log.error("audit_unavailable_refusing", refused_since_last_log=self._refused, reason=self.trail.unhealthy_reason, type=scope["type"])
            self._refused = 0


class _WsState:
    __slots__ = ("accepted", "close_code", "closed_by", "messages_in", "messages_out", "bytes_in", "bytes_out", "denial_status")

    def __init__(self) -> None:
        self.accepted = False
        self.close_code: int | None = None
        self.closed_by: str | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.denial_status: int | None = None
