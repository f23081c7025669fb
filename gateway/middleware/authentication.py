"""Authentication: decide who is asking, and tell Streamlit only that.

The identity comes from, in order:

1. ``Authorization: Bearer <JWT>`` (API tokens).  A bad token is a 401 with
   ``WWW-Authenticate: Bearer error="invalid_token"``; it never falls back
   to the cookie, so a client cannot mix a stolen cookie with a junk token.
2. The upstream identity assertion (an identity-aware proxy's signed header),
   when an ``upstream`` verifier is configured.  A bad assertion is a 401.
3. The session record the session layer resolved.

It sets ``ctx.identity`` (None when anonymous; the authorization layer
decides what anonymous may do).  Then, for every request and websocket
handshake, it removes every inbound ``X-Gateway-*`` header and the identity
headers other proxies use, and injects ``X-Gateway-User``,
``X-Gateway-Email`` and ``X-Gateway-Groups`` (comma-separated) for the
verified identity, so ``st.user`` (via ``server.trustedUserHeaders``) can
only ever be the gateway's user.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Protocol

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.sessions import SessionManager
from gateway.auth.tokens import TokenError, TokenVerifier
from gateway.context import Identity
from gateway.middleware.session import WS_CLOSE_SESSION_ENDED, ensure_context

log = structlog.get_logger(__name__)

# Plain identity headers other proxies and platforms set; a client could
# send them too, so none of them may reach Streamlit from outside.
WELL_KNOWN_IDENTITY_HEADERS = (
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "cf-access-authenticated-user-email",
    "cf-access-jwt-assertion",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-remote-user",
    "remote-user",
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-data",
    "x-amzn-oidc-accesstoken",
)
USER_HEADER = b"x-gateway-user"
EMAIL_HEADER = b"x-gateway-email"
GROUPS_HEADER = b"x-gateway-groups"
AUTH_METHOD_HEADER = b"x-gateway-auth-method"
EXPIRES_HEADER = b"x-gateway-session-expires"
_PREFIX = b"x-gateway-"


class UpstreamVerifier(Protocol):
    """Verifies an identity-aware proxy's assertion header (see gateway.auth.upstream)."""

    header: str

    async def verify(self, token: str) -> Identity: ...


def _header_value(text: str) -> bytes:
    clean = "".join(c for c in text if ord(c) >= 32 and ord(c) != 127)
    try:
        return clean.encode("latin-1")  # what Starlette decodes headers as
    except UnicodeEncodeError:
        return clean.encode("utf-8")


_HEADER_CACHE: dict[Identity, list[tuple[bytes, bytes]]] = {}
_HEADER_CACHE_MAX = 4096


def identity_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """The verified identity as headers; cached per identity (a frozen value)."""
    cached = _HEADER_CACHE.get(identity)
    if cached is None:
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        cached = _HEADER_CACHE[identity] = _identity_headers(identity)
    return cached


def _identity_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    # A comma inside a group name would split it into two groups downstream.
    groups = ",".join(sorted(g for g in identity.groups if "," not in g))
    expires = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(identity.expires_at)) if identity.expires_at else ""
    )
    return [
        (USER_HEADER, _header_value(identity.user)),
        (EMAIL_HEADER, _header_value(identity.email)),
        (GROUPS_HEADER, _header_value(groups)),
        (AUTH_METHOD_HEADER, _header_value(identity.auth_method)),
        (EXPIRES_HEADER, _header_value(expires)),
    ]


class AuthenticationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: SessionManager | None = None,
        tokens: TokenVerifier | None = None,
        upstream: UpstreamVerifier | None = None,
        strip_headers: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        recheck_interval_s: float = 5.0,
    ) -> None:
        """``strip_headers``: more inbound header names to drop (case-insensitive).

        ``recheck_interval_s``: how often (at most, on inbound messages) a
        token-authenticated websocket checks that the token's subject was
        not disabled or revoked since (sessions: the session layer does it).
        """
        if recheck_interval_s < 0:
            raise ValueError("recheck_interval_s must not be negative")
        self.recheck_interval_s = recheck_interval_s
        self.app = app
        self.sessions = sessions
        self.tokens = tokens
        self.upstream = upstream
        self.clock = clock
        self.upstream_header = upstream.header.lower().encode("latin-1") if upstream is not None else None
        names = {h.lower().strip() for h in (*WELL_KNOWN_IDENTITY_HEADERS, *strip_headers)}
        if self.upstream_header:
            names.add(self.upstream_header.decode("latin-1"))
        if any(not n for n in names):
            raise ValueError("strip_headers must not contain empty names")
        self.strip = frozenset(n.encode("latin-1") for n in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = ensure_context(scope)
        headers: list[tuple[bytes, bytes]] = scope["headers"]

        authorization: list[bytes] = []
        assertion: list[bytes] = []
        for name, value in headers:
            if name == b"authorization":
                authorization.append(value)
            elif name == self.upstream_header:
                assertion.append(value)

        identity: Identity | None = None
        bearer = False
        if authorization:
            schemes = [v.decode("latin-1").strip().partition(" ") for v in authorization]
            bearer = any(scheme.lower() == "bearer" for scheme, _, _ in schemes)
            if bearer:
                credentials = schemes[0][2]
                if len(authorization) > 1:
                    await self._reject(scope, receive, send, "invalid_request", "multiple Authorization headers")
                    return
                if self.tokens is None:
                    await self._reject(scope, receive, send, "invalid_token", "API tokens are not accepted here")
                    return
                try:
                    identity = self.tokens.verify(credentials.strip())
                except TokenError as exc:
                    ctx.extra["auth_error"] = exc.reason
                    await self._reject(scope, receive, send, "invalid_token", "The access token is not valid.")
                    return
        if identity is None and not bearer and assertion and self.upstream is not None:
            if len(assertion) > 1:
                await self._reject(scope, receive, send, "invalid_request", "multiple identity assertions")
                return
            try:
                identity = await self.upstream.verify(assertion[0].decode("latin-1").strip())
            except Exception as exc:  # noqa: BLE001 - any failure means "not verified"
                reason = str(getattr(exc, "reason", "") or type(exc).__name__)[:64]
                log.info("upstream_assertion_rejected", reason=reason, request_id=ctx.request_id)
                ctx.extra["auth_error"] = f"upstream:{reason}"
                if reason == "jwks_unavailable":
                    # We cannot check anyone right now: refuse, but say so honestly.
                    await self._reject(
                        scope, receive, send, "upstream_unavailable",
                        "The identity provider cannot be reached. Try again shortly.", status=503,
                    )  # fmt: skip
                    return
                await self._reject(scope, receive, send, "invalid_assertion", "The identity assertion is not valid.")
                return
        if identity is None and not bearer:
            record = ctx.extra.get("session")
            if record is not None and self.sessions is not None:
                identity = self.sessions.identity(record)
        ctx.identity = identity

        strip = self.strip
        kept = [
            (n, v)
            for n, v in headers
            if not (n.startswith(_PREFIX) or n in strip or (bearer and n == b"authorization"))
        ]
        if identity is not None:
            kept.extend(identity_headers(identity))
        scope["headers"] = kept

        if (
            scope["type"] == "websocket"
            and identity is not None
            and identity.session_id is None
            and identity.expires_at is not None
        ):
            receive, send = self._watch_websocket(identity, receive, send)
        await self.app(scope, receive, send)

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, error: str, message: str, *, status: int = 401
    ) -> None:
        ctx = ensure_context(scope)
        # The audit trail says why (the token's own reason code, e.g.
        # "invalid_token: revoked"); the client only learns the RFC 6750 code.
        detail = ctx.extra.get("auth_error")
        ctx.deny_reason = f"{error}: {detail}" if detail else error
        ctx.decision = "deny"
        if scope["type"] == "websocket":
            # Closing before accept refuses the handshake (the server answers 403).
            await send({"type": "websocket.close", "code": 1008 if status == 401 else 1013, "reason": error})
            return
        body = orjson.dumps(
            {"error": {"status": status, "code": error, "message": message, "request_id": ctx.request_id}}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if status == 401:
            # RFC 6750: the challenge names the problem, never the details.
            code = "invalid_request" if error == "invalid_request" else "invalid_token"
            headers.append((b"www-authenticate", f'Bearer error="{code}"'.encode("latin-1")))
        else:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _watch_websocket(self, identity: Identity, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """Close a socket authenticated without a session once its credential has expired or been revoked."""
        clock = self.clock
        expires_at = identity.expires_at
        assert expires_at is not None
        tokens = self.tokens if identity.auth_method == "token" and identity.issued_at is not None and identity.token_id else None
        interval = self.recheck_interval_s
        state: dict[str, Any] = {"closed": False, "checked": clock()}

        async def close(reason: str) -> Message:
            state["closed"] = True
            await send({"type": "websocket.close", "code": WS_CLOSE_SESSION_ENDED, "reason": reason})
            return {"type": "websocket.disconnect", "code": WS_CLOSE_SESSION_ENDED}

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] != "websocket.receive" or state["closed"]:
                return message
            now = clock()
            if now >= expires_at:
                return await close("token expired")
            if tokens is not None and now - state["checked"] >= interval:
                state["checked"] = now
                if tokens.credential_problem(identity.user, identity.issued_at, identity.token_id) is not None:  # type: ignore[arg-type]
                    return await close("token revoked")
            return message

        async def guarded_send(message: Message) -> None:
            if not state["closed"]:
                await send(message)

        return checked_receive, guarded_send
