"""An MCP server at ``/mcp`` (official ``mcp`` SDK, streamable HTTP), behind the gateway.

Read-only tools: ``list_my_tools``, ``explain_access(path)`` for anyone the
policy lets use MCP, and ``search_audit(filters)``, ``verify_audit()`` for
those the policy lets read the audit trail (shipped: ``auditors``,
``security``).

Security, outermost first:

* the gateway chain: ``/mcp`` is a gateway path, so identity, policy
  (``/mcp``), audit and headers apply as for any page;
* :class:`McpEndpoint`: API tokens only (``Authorization: Bearer``, from
  ``gateway token create``); a browser session is refused, so no page on any
  site can drive the MCP server with a signed-in user's cookie; a foreign
  ``Origin`` is refused (DNS rebinding); the SDK session is bound to the
  token's subject, so a leaked ``Mcp-Session-Id`` is useless to anyone else;
* :meth:`McpFeature.guard` (SDK middleware): each ``tools/call`` is decided
  by policy on ``/mcp/tools/<name>`` and audited as ``mcp.call`` with the
  tool name, outcome and decision; ``tools/list`` shows only the tools the
  caller may call.

The SDK's session manager is created when the feature is built (before the
gateway's lifespan starts, as the SDK requires) and run by the lifespan
(:meth:`McpFeature.start` / :meth:`McpFeature.stop`) in a task of its own,
since its task group must be entered and left in the same task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, field_validator
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from gateway.api.access import AccessError, Caller, caller, tool_entries
from gateway.api.access import explain_access as explain
from gateway.errors import error_response
from gateway.features import BaseFeature, ReadinessCheck
from gateway.policy import Request as PolicyRequest

if TYPE_CHECKING:
    from gateway.services import Services

log = structlog.get_logger(__name__)

MCP_PATH = "/mcp"
TOOL_PATH = "/mcp/tools/{}"  # the virtual path the policy decides each tool call on
TOOL_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
MAX_EVENTS = 500


class AuditFilters(BaseModel):
    """Which audit records to return (all conditions must hold)."""

    action: str | None = Field(None, description='An action such as "auth.login", or a prefix ending in "." such as "auth."')
    user: str | None = Field(None, description="The user name")
    outcome: Literal["success", "failure", "unknown"] | None = None
    since: str | None = Field(None, description="RFC 3339 time, inclusive")
    until: str | None = Field(None, description="RFC 3339 time, exclusive")
    client_ip: str | None = None
    request_id: str | None = None
    limit: int = Field(50, ge=1, le=MAX_EVENTS, description="At most this many of the newest matching records")

    @field_validator("since", "until")
    @classmethod
    def _rfc3339(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be an RFC 3339 time such as 2025-01-31T08:00:00Z") from None
        if t.tzinfo is None:
            raise ValueError("must carry a time-zone offset (Z or +01:00)")
        return v


def _get(rec: dict[str, Any], dotted: str, key: str) -> Any:
    node: Any = rec
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node.get(key) if isinstance(node, dict) else None


def flatten_record(rec: dict[str, Any]) -> dict[str, Any]:
    """An ECS audit record as the flat fields the conventions speak of."""
    from gateway.audit import FIELD_MAP

    ev = rec.get("event") or {}
    out: dict[str, Any] = {"time": rec.get("@timestamp"), "action": ev.get("action"), "outcome": ev.get("outcome")}
    for flat, (container, key) in FIELD_MAP.items():
        if flat in ("duration_ms", "reason"):
            continue
        value = _get(rec, container, key)
        if value not in (None, "", [], {}):
            out[flat] = value
    if ev.get("reason"):
        out["reason"] = ev["reason"]
    seq = _get(rec, "gateway", "seq")
    if seq is not None:
        out["seq"] = seq
    return out


class McpEndpoint:
    """The ASGI app at ``/mcp``: bearer tokens only, own origin only, session bound to the caller."""

    def __init__(self, feature: "McpFeature") -> None:
        self.feature = feature

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await error_response(scope, 404)(scope, receive, send)
            return
        who = caller(scope)
        if who is None:  # the chain refuses anonymous first; this is the belt to its braces
            await error_response(scope, 401)(scope, receive, send)
            return
        if who.identity.auth_method != "token":
            who.ctx.decision, who.ctx.deny_reason = "deny", "mcp_requires_token"
            response = error_response(
                scope, 401,
                detail="The MCP endpoint accepts API tokens only (Authorization: Bearer ...), not browser sessions.",
                headers={"www-authenticate": 'Bearer realm="toolgate", error="invalid_token"'},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        if origin is not None and origin.lower() != f"{who.ctx.scheme}://{who.ctx.host}".lower():
            who.ctx.decision, who.ctx.deny_reason = "deny", "mcp_foreign_origin"
            await error_response(scope, 403, detail="Cross-origin MCP requests are refused.")(scope, receive, send)
            return
        if not self.feature.running:
            await error_response(scope, 503, detail="The MCP server is not running.")(scope, receive, send)
            return
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        # The SDK binds each MCP session to this principal: a request for a
        # session with another subject's credential is answered "not found".
        principal = AccessToken(
            token="", client_id=who.identity.user, scopes=[], subject=who.identity.user,
            claims={"iss": self.feature.services.settings.auth.token_issuer},
        )  # fmt: skip
        scope["user"] = AuthenticatedUser(principal)
        await self.feature.session_manager.handle_request(scope, receive, send)


class McpFeature(BaseFeature):
    name = "mcp"

    def __init__(self, services: "Services") -> None:
        from mcp.server import MCPServer
        from mcp.server.transport_security import TransportSecuritySettings

        self.services = services
        self.running = False
        self.calls = 0
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        brand = services.settings.server.brand
        # MCPServer() calls logging.basicConfig(); the gateway owns logging (structlog).
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        self.server: Any = MCPServer(
            f"{brand.lower()}-gateway",
            title=f"{brand} gateway",
            instructions=(
                "Read-only access to the gateway: which internal tools you may open, why a path is allowed or "
                "denied, and (for auditors and the security team) the audit trail and its integrity."
            ),
            middleware=[self.guard],
        )
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        self._register_tools()
        # Creates the session manager now, before the lifespan starts; Host and
        # Origin are checked by the gateway itself (trusted hosts, McpEndpoint).
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            session_idle_timeout=float(services.settings.session.idle_timeout_s),
        )
        self.session_manager = self.server.session_manager
        self.endpoint = McpEndpoint(self)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _caller_of(ctx: Any) -> Caller | None:
        request = getattr(ctx, "request", None)
        if request is None and hasattr(ctx, "request_context"):
            request = getattr(ctx.request_context, "request", None)
        scope = getattr(request, "scope", None)
        return caller(scope) if scope is not None else None

    def _decide(self, who: Caller, tool: str) -> Any:
        ident = who.identity
        req = PolicyRequest(
            user=ident.user, groups=ident.groups, email=ident.email or None,
            path=TOOL_PATH.format(tool), method="POST", ip=who.ip,
        )  # fmt: skip
        return self.services.policy.decide(req)

    def _allowed(self, who: Caller, tool: str) -> bool:
        try:
            return self._decide(who, tool).allowed
        except Exception:  # noqa: BLE001 - an engine fault grants nothing
            return False

    def _audit(self, who: Caller | None, tool: str, outcome: str, *, decision: Any = None, reason: str | None = None,
               started: float | None = None, arguments: Any = None, session: str | None = None) -> None:  # fmt: skip
        details: dict[str, Any] = {"mcp_tool": tool}
        if isinstance(arguments, dict):
            # Names and short values only: enough to see what was asked.
            details["arguments"] = {str(k)[:64]: (str(v)[:200] if not isinstance(v, (int, float, bool)) else v)
                                    for k, v in list(arguments.items())[:16]}  # fmt: skip
        if session:
            details["mcp_session"] = session[:64]
        fields: dict[str, Any] = {"method": "POST", "path": MCP_PATH, "details": details, "reason": reason}
        if who is not None:
            ident = who.identity
            fields.update(
                request_id=who.ctx.request_id, client_ip=who.ctx.client_ip, user=ident.user, email=ident.email or None,
                groups=sorted(ident.groups), auth_method=ident.auth_method,
            )  # fmt: skip
        if decision is not None:
            fields.update(decision="allow" if decision.allowed else "deny", rule_id=decision.rule_id,
                          policy_version=decision.policy_version)  # fmt: skip
        if started is not None:
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.services.emit("mcp.call", outcome=outcome, **fields)

    @staticmethod
    def _error_result(text: str) -> Any:
        from mcp_types import CallToolResult, TextContent

        return CallToolResult(content=[TextContent(text=text)], is_error=True)

    # ------------------------------------------------------------ SDK middleware: policy + audit

    async def guard(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/list":
            result = await call_next(ctx)
            who = self._caller_of(ctx)
            tools = getattr(result, "tools", None)
            if tools is not None:
                allowed = [t for t in tools if who is not None and self._allowed(who, t.name)]
                result = result.model_copy(update={"tools": allowed})
            elif isinstance(result, dict) and isinstance(result.get("tools"), list):
                result = {**result, "tools": [t for t in result["tools"] if who is not None and self._allowed(who, str(t.get("name")))]}
            return result
        if ctx.method != "tools/call":
            return await call_next(ctx)

        self.calls += 1
        params = ctx.params or {}
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        who = self._caller_of(ctx)
        session = getattr(getattr(ctx, "session", None), "session_id", None)
        label = name if isinstance(name, str) and TOOL_NAME_RE.match(name) else "invalid"
        if who is None:
            self._audit(None, label, "failure", reason="no_identity", arguments=arguments)
            return self._error_result("Not signed in.")
        if label == "invalid":
            self._audit(who, label, "failure", reason="bad_tool_name", session=session)
            return self._error_result("Unknown tool.")
        try:
            decision = self._decide(who, name)
        except Exception:  # noqa: BLE001
            self._audit(who, name, "failure", reason="policy_error", arguments=arguments, session=session)
            return self._error_result("Access policy is unavailable.")
        if not decision.allowed:
            self._audit(who, name, "failure", decision=decision, reason="denied", arguments=arguments, session=session)
            return self._error_result(f"Access denied: you may not use the {name} tool. To request access, contact "
                                      f"{self.services.settings.server.access_contact}.")  # fmt: skip
        started = time.perf_counter()
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self._audit(who, name, "failure", decision=decision, reason=type(exc).__name__, started=started,
                        arguments=arguments, session=session)  # fmt: skip
            raise
        failed = bool(getattr(result, "is_error", False) or (isinstance(result, dict) and result.get("isError")))
        self._audit(who, name, "failure" if failed else "success", decision=decision, started=started,
                    reason="tool_error" if failed else None, arguments=arguments, session=session)  # fmt: skip
        return result

    # ------------------------------------------------------------ the tools

    def _register_tools(self) -> None:
        services = self.services
        read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

        def who_of(ctx: Context) -> Caller:
            who = self._caller_of(ctx.request_context)
            if who is None:
                raise PermissionError("not signed in")
            return who

        @self.server.tool(annotations=read_only)
        def list_my_tools(ctx: Context) -> dict[str, Any]:
            """The internal tool pages you may open, with their links."""
            who = who_of(ctx)
            return {"user": who.identity.user, "tools": tool_entries(services, who)}

        @self.server.tool(annotations=read_only)
        def explain_access(path: str, ctx: Context, method: str = "GET") -> dict[str, Any]:
            """May you open this path? The decision, and for a denial whom to ask.

            Callers the policy lets explain for anyone also get the rule-by-rule explanation.
            """
            try:
                return explain(services, who_of(ctx), {"path": path, "method": method})
            except AccessError as exc:
                raise ValueError(exc.message) from None

        @self.server.tool(annotations=read_only)
        async def search_audit(ctx: Context, filters: AuditFilters | None = None) -> dict[str, Any]:
            """Search the audit trail; the newest matching records, oldest first."""
            who_of(ctx)
            f = filters or AuditFilters()
            return await asyncio.to_thread(self.search, f)

        @self.server.tool(annotations=read_only)
        async def verify_audit(ctx: Context) -> dict[str, Any]:
            """Check the audit trail's hash chain: intact, or the first record that was altered."""
            who_of(ctx)
            from gateway.background import verify_trail

            res = await asyncio.to_thread(verify_trail, services.audit.settings)
            return {
                "ok": res.ok,
                "tampered": res.tampered,
                "records": res.records,
                "files": [Path(p).name for p in res.files],
                "first_seq": res.first_seq,
                "last_seq": res.last_seq,
                "problem": None if res.problem is None else {
                    "kind": res.problem.kind, "file": Path(res.problem.file).name, "line": res.problem.line,
                    "message": res.problem.message,
                },
                "warnings": [str(w) for w in res.warnings],
                "summary": res.summary(),
            }  # fmt: skip

    def search(self, f: AuditFilters) -> dict[str, Any]:
        from gateway.audit import read_events
        from gateway.background import trail_files

        self.services.audit.sync()  # see the events this very session just caused
        files = trail_files(self.services.audit.settings.path)
        if not files:
            return {"events": [], "count": 0, "files": []}
        newest: collections.deque[dict[str, Any]] = collections.deque(maxlen=f.limit)
        matched = 0
        try:
            for rec in read_events(
                files, actions=[f.action] if f.action else None, user=f.user,
                since=dt.datetime.fromisoformat(f.since) if f.since else None,
                until=dt.datetime.fromisoformat(f.until) if f.until else None,
                outcome=f.outcome, request_id=f.request_id, client_ip=f.client_ip,
            ):  # fmt: skip
                matched += 1
                newest.append(rec)
        except ValueError as exc:
            raise ValueError(f"bad filter: {exc}") from None
        return {"events": [flatten_record(r) for r in newest], "count": len(newest), "matched": matched,
                "files": [p.name for p in files]}  # fmt: skip

    # ------------------------------------------------------------ feature hooks

    def routes(self) -> list[BaseRoute]:
        from gateway.platform_features import not_found

        # Below /mcp are only the policy's virtual per-tool paths: nothing to serve.
        return [Route(MCP_PATH, self.endpoint, methods=["GET", "POST", "DELETE"], name="mcp"), Mount(MCP_PATH, app=not_found)]

    def readiness(self) -> dict[str, ReadinessCheck]:
        def check() -> tuple[bool, dict[str, object]]:
            return self.running, {"calls": self.calls}

        return {"mcp": check}

    async def start(self) -> None:
        started = asyncio.Event()
        self._stop = asyncio.Event()
        stop = self._stop

        async def run() -> None:
            async with self.session_manager.run():
                self.running = True
                started.set()
                try:
                    await stop.wait()
                finally:
                    self.running = False

        self._task = asyncio.create_task(run(), name="mcp-session-manager")
        waiter = asyncio.create_task(started.wait())
        done, _ = await asyncio.wait({self._task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # raises what went wrong
        if not started.is_set():
            waiter.cancel()
            raise RuntimeError("the MCP session manager did not start")

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._task = None
