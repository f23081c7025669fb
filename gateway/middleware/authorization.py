"""Every request and websocket handshake is decided by policy, or refused.

The path is made canonical first (dot segments, duplicate slashes,
backslashes; a GET is redirected to the canonical form, anything else is
refused) and the policy engine then decides on its normalised form, so
``/AUDIT``, ``//audit``, ``/%61udit`` and ``/sales/../audit`` are all decided as
``/audit``.  Anonymous browsers are sent to sign in, anonymous API clients
get 401, a denied user the branded 403, and paths that exist nowhere 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import Identity, get_context
from gateway.errors import error_response, send_error, wants_json
from gateway.paths import canonical_path, classify
from gateway.tools import tool_for_path


class Decision(Protocol):
    allowed: bool
    rule_id: str
    reason: str
    policy_version: str


@dataclass(frozen=True)
class AccessQuery:
    identity: Identity
    path: str  # normalised, as policy matches it
    tool: str | None
    method: str
    client_ip: str


Authorize = Callable[[AccessQuery], Decision]
Normalize = Callable[[str | bytes], str]  # raises ValueError on hostile paths (NUL, encoded slash, …)
DenyText = Callable[[AccessQuery, Decision], str]

LOGIN_PATH = "/auth/login"
SESSION_NOTICES = frozenset({"expired_idle", "expired_absolute", "revoked"})
WS_POLICY_VIOLATION = 1008
PATH_CACHE_SIZE = 4096


class AuthorizationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authorize: Authorize,
        normalize: Normalize,
        deny_text: DenyText | None = None,
    ) -> None:
        self.app = app
        self.authorize = authorize
        self.normalize = normalize
        self.deny_text = deny_text
        self._paths: dict[tuple[object, str], tuple[str | None, str, str, str | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        if ctx is None:  # the chain is mis-assembled: refuse rather than guess
            await send_error(scope, receive, send, 500)
            return
        is_ws = scope["type"] == "websocket"
        method = "GET" if is_ws else scope["method"]

        raw = scope["path"]
        raw_bytes = scope.get("raw_path") or raw
        key = (raw_bytes, raw)
        facts = self._paths.get(key)
        if facts is None:
            facts = self._path_facts(raw_bytes, raw)
            if len(self._paths) >= PATH_CACHE_SIZE:  # bounded: paths are client-chosen
                self._paths.clear()
            self._paths[key] = facts
        path, canon, kind, tool_id = facts
        if path is None:
            self._deny(ctx, "hostile_path")
            await send_error(scope, receive, send, 400, detail="The request path is not allowed.")
            return
        if canon != raw:
            if method in ("GET", "HEAD") and not is_ws:
                query = scope.get("query_string", b"").decode("latin-1")
                target = quote(canon, safe="/:@!$&'()*+,;=-._~%") + (f"?{query}" if query else "")
                await RedirectResponse(target, status_code=308)(scope, receive, send)
                return
            self._deny(ctx, "non_canonical_path")
            await send_error(scope, receive, send, 400, detail="The request path is not canonical.")
            return
        ctx.path = path
        ctx.tool = tool_id

        if kind == "public":
            ctx.decision = "public"
            await self.app(scope, receive, send)
            return

        identity = ctx.identity
        if identity is None:
            self._deny(ctx, "anonymous")
            await self._anonymous(scope, receive, send, method, is_ws, ctx.extra.get("session_reason"))
            return

        if kind == "unknown":
            ctx.decision = "not_found"
            await send_error(scope, receive, send, 404)
            return

        query = AccessQuery(identity=identity, path=path, tool=ctx.tool, method=method, client_ip=ctx.client_ip)
        try:
            decision = self.authorize(query)
        except Exception:  # noqa: BLE001 - an engine fault must deny, never allow
            ctx.decision, ctx.deny_reason, ctx.rule_id = "deny", "policy_error", "policy-error"
            await send_error(scope, receive, send, 503, detail="Access policy is unavailable.")
            return
        ctx.rule_id = decision.rule_id
        ctx.policy_version = decision.policy_version
        if not decision.allowed:
            self._deny(ctx, decision.reason or "policy")
            detail = self.deny_text(query, decision) if self.deny_text else None
            await send_error(scope, receive, send, 403, detail=detail, ws_close_code=WS_POLICY_VIOLATION)
            return
        ctx.decision = "allow"
        await self.app(scope, receive, send)

    def _path_facts(self, raw_bytes: str | bytes, raw: str) -> tuple[str | None, str, str, str | None]:
        """(policy path or None when hostile, canonical path, kind, tool id); pure, so cached."""
        # The policy path comes from the raw bytes, before the server's own
        # percent-decoding could hide an encoded slash or dot segment.
        try:
            path = self.normalize(raw_bytes)
        except ValueError:
            return None, raw, "hostile", None
        kind = classify(path)
        tool = tool_for_path(path) if kind == "page" else None
        return path, canonical_path(raw), kind, tool.id if tool else None

    @staticmethod
    def _deny(ctx: object, reason: str) -> None:
        ctx.decision = "deny"  # type: ignore[attr-defined]
        ctx.deny_reason = reason  # type: ignore[attr-defined]

    @staticmethod
    async def _anonymous(
        scope: Scope, receive: Receive, send: Send, method: str, is_ws: bool, session_reason: object
    ) -> None:
        if is_ws:
            await send_error(scope, receive, send, 401, ws_close_code=WS_POLICY_VIOLATION)
            return
        if wants_json(scope) or method not in ("GET", "HEAD"):
            response = error_response(
                scope, 401, headers={"www-authenticate": 'Bearer realm="toolgate"'}
            )
            await response(scope, receive, send)
            return
        raw_query = scope.get("query_string", b"").decode("latin-1")
        next_path = scope["path"] + (f"?{raw_query}" if raw_query else "")
        location = f"{LOGIN_PATH}?next={quote(next_path, safe='')}"
        if session_reason in SESSION_NOTICES:
            # The sign-in page explains why (fixed texts only, keyed by reason).
            location += f"&reason={session_reason}"
        await RedirectResponse(location, status_code=303)(scope, receive, send)
