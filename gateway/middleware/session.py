"""Session: resolve the signed session cookie into a server-side session record.

Puts the record (or None) in ``ctx.extra["session"]`` and why in
``ctx.extra["session_reason"]`` (see ``gateway.auth.sessions.REASONS``); the
authentication layer turns it into the identity.  It also

* records activity for the idle timeout (at most once a minute per session),
* clears a cookie that failed (bad signature, expired, revoked) on the
  response, so the browser stops sending it,
* removes the session cookie from the headers passed inward, so no tool
  script can read it through ``st.context.cookies``,
* watches open websockets: on an inbound message, at most every
  ``recheck_interval_s``, the session is checked again, and a session that
  was revoked or expired closes the socket with code 4401.

On https only ``__Host-toolgate_session`` is read: the plain name could have
been planted by a sibling subdomain or a plain-http response.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import csrf, oidc_routes
from gateway.auth.sessions import (
    COOKIE_HTTP,
    COOKIE_HTTPS,
    SessionManager,
    SessionRecord,
    scope_https,
    unquote_cookie_value,
)
from gateway.context import SCOPE_KEY, RequestContext, get_context
from gateway.paths import AUTH_PREFIX

WS_CLOSE_SESSION_ENDED = 4401
_SESSION_COOKIES = frozenset({COOKIE_HTTP, COOKIE_HTTPS})
# The sign-in flows' pre-session cookies (CSRF nonce, OIDC state) are read by
# the gateway's /auth/* routes only; nothing behind the gateway gets them
# (st.context.cookies would otherwise show them to every tool).
_ALL_COOKIES = _SESSION_COOKIES | {csrf.COOKIE_HTTP, csrf.COOKIE_HTTPS, oidc_routes.COOKIE_HTTP, oidc_routes.COOKIE_HTTPS}


def ensure_context(scope: Scope) -> RequestContext:
    """The request context; a minimal one if this layer runs without the context layer."""
    ctx = get_context(scope)
    if ctx is None:
        client = scope.get("client")
        ctx = RequestContext(
            request_id=secrets.token_hex(16),
            client_ip=client[0] if client else "",
            scheme="https" if scope.get("scheme") in ("https", "wss") else "http",
            host="",
        )
        scope[SCOPE_KEY] = ctx
    return ctx


# Browsers send the same Cookie header on every request, so its parse is
# remembered per wanted cookie name and kind of route: raw header -> (wanted
# value, the header without our cookies or None when none are left).
# Bounded, like every cache keyed by client bytes, and only for headers of a
# sane size.
_PARSED: dict[tuple[str, bool], dict[bytes, tuple[str, bytes | None]]] = {
    (name, to_auth): {} for name in _SESSION_COOKIES for to_auth in (False, True)
}
_PARSED_MAX = 1024
_PARSED_MAX_BYTES = 4096


def _strip_our_cookies(raw: bytes, wanted: str, ours: frozenset[str]) -> tuple[str, bytes | None]:
    """``wanted``'s value (the first one sent), and the cookies not in ``ours`` as
    sent: order and duplicates kept, for whatever reads them behind the gateway."""
    value = ""
    kept = []
    for part in raw.decode("latin-1").split(";"):
        cname, sep, cvalue = part.partition("=")
        cname = cname.strip()
        if sep and cname in ours:
            if cname == wanted and not value:
                value = unquote_cookie_value(cvalue)
            continue
        if part.strip():
            kept.append(part.strip())
    return value, ("; ".join(kept).encode("latin-1") if kept else None)


def _split_cookies(
    headers: list[tuple[bytes, bytes]], wanted: str, *, to_auth: bool = False
) -> tuple[str, list[tuple[bytes, bytes]] | None]:
    """The value of cookie ``wanted``, and the headers with our cookies removed
    (None when there was nothing to remove, to keep the common path allocation-free).

    ``to_auth``: the request is for the gateway's /auth/* routes, which keep
    the pre-session cookies; every other request loses them too.
    """
    cache = _PARSED[(wanted, to_auth)]
    ours = _SESSION_COOKIES if to_auth else _ALL_COOKIES
    value = ""
    out: list[tuple[bytes, bytes]] | None = None
    for i, item in enumerate(headers):
        raw = item[1]
        if item[0] != b"cookie" or b"toolgate_" not in raw:
            if out is not None:
                out.append(item)
            continue
        if out is None:
            out = list(headers[:i])
        parsed = cache.get(raw)
        if parsed is None:
            parsed = _strip_our_cookies(raw, wanted, ours)
            if len(raw) <= _PARSED_MAX_BYTES:
                if len(cache) >= _PARSED_MAX:
                    cache.clear()
                cache[raw] = parsed
        if parsed[0] and not value:
            value = parsed[0]
        if parsed[1] is not None:
            out.append((b"cookie", parsed[1]))
    return value, out


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: SessionManager,
        https: bool | None = None,
        strip_cookie: bool = True,
        recheck_interval_s: float = 5.0,
    ) -> None:
        """``https``: force the cookie flavour; None asks the request context per request."""
        if recheck_interval_s < 0:
            raise ValueError("recheck_interval_s must not be negative")
        self.app = app
        self.sessions = sessions
        self.https = https
        self.strip_cookie = strip_cookie
        self.recheck_interval_s = recheck_interval_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = ensure_context(scope)
        https = self.https if self.https is not None else scope_https(scope)
        value, stripped = _split_cookies(
            scope["headers"], self.sessions.cookie_name(https), to_auth=scope["path"].startswith(AUTH_PREFIX)
        )
        if stripped is not None and self.strip_cookie:
            scope["headers"] = stripped

        record: SessionRecord | None = None
        reason = "missing"
        if value:
            record, reason = await self.sessions.resolve(value, https=https)
            if record is not None:
                record = await self.sessions.touch(record)
        ctx.extra["session"] = record
        ctx.extra["session_reason"] = reason

        if scope["type"] == "websocket":
            if record is not None:
                receive, send = self._watch_websocket(ctx, record, receive, send)
            await self.app(scope, receive, send)
            return
        if reason not in ("ok", "missing"):
            send = self._clearing_send(send, https)
        await self.app(scope, receive, send)

    def _clearing_send(self, send: Send, https: bool) -> Send:
        name = self.sessions.cookie_name(https).encode("latin-1") + b"="
        clear = self.sessions.clear_cookie_header(https)

        async def send_clearing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                # A response that sets a new session (sign-in) must not be undone.
                if not any(k.lower() == b"set-cookie" and v.startswith(name) for k, v in headers):
                    headers.append((b"set-cookie", clear))
                    message["headers"] = headers
            await send(message)

        return send_clearing

    def _watch_websocket(
        self, ctx: RequestContext, record: SessionRecord, receive: Receive, send: Send
    ) -> tuple[Receive, Send]:
        sessions = self.sessions
        interval = self.recheck_interval_s
        state: dict[str, Any] = {"record": record, "checked": sessions.clock(), "closed": False}

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] != "websocket.receive" or state["closed"]:
                return message
            now = sessions.clock()
            if now - state["checked"] < interval:
                return message
            state["checked"] = now
            identity = ctx.identity
            if identity is None or identity.session_id != record.session_id:
                return message  # this socket is not riding on the session
            current, reason = await sessions.check(state["record"])
            if current is None:
                state["closed"] = True
                ctx.extra["session_reason"] = reason
                await send({"type": "websocket.close", "code": WS_CLOSE_SESSION_ENDED, "reason": "session ended"})
                return {"type": "websocket.disconnect", "code": WS_CLOSE_SESSION_ENDED}
            state["record"] = await sessions.touch(current)
            return message

        async def guarded_send(message: Message) -> None:
            if state["closed"]:
                return  # the socket is closed; the app learns it from receive()
            await send(message)

        return watched_receive, guarded_send
