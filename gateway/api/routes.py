"""The gateway's own JSON API under ``/api/`` (``/api/whoami`` lives with the sign-in routes).

``GET /api/tools``             the tool pages I may open (JSON; HTML with ``Accept: text/html`` or ``?format=html``)
``GET /api/policy/decision``   ``?path=/audit&method=GET`` -> may I?  (callers allowed to explain for
``POST /api/policy/decision``  anyone add ``user``, ``groups``, ``email``, ``ip``; JSON body for POST)

Both sit behind the whole chain and the policy like any page; they work with
a session cookie or an API token.  Unsafe methods with a cookie session need
``X-Requested-With`` (see gateway.api.csrf).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway.api.access import AccessError, caller, explain_access, tool_entries
from gateway.api.csrf import csrf_refusal
from gateway.errors import PAGE_CSP, error_response, page_html
from gateway.features import BaseFeature

if TYPE_CHECKING:
    from gateway.services import Services

MAX_JSON_BYTES = 16 * 1024
_NO_STORE = {"cache-control": "no-store"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=_NO_STORE)


def _wants_html(request: Request) -> bool:
    if request.query_params.get("format") == "html":
        return True
    accept = request.headers.get("accept", "").lower()
    return accept.startswith("text/html")


def api_routes(services: "Services") -> list[BaseRoute]:
    brand = services.settings.server.brand

    async def tools(request: Request) -> Response:
        who = caller(request.scope)
        if who is None:
            return error_response(request.scope, 401)
        entries = tool_entries(services, who)
        if not _wants_html(request):
            return _json({"user": who.identity.user, "policy_version": services.policy.version, "tools": entries})
        items = "".join(
            f'<li><a href="{html.escape(t["path"])}">{html.escape(t["title"])}</a> '
            f'<span class="muted">{html.escape(t["description"])}</span></li>'
            for t in entries
        ) or "<li>No tools are open to you yet.</li>"
        body = f"<p>Signed in as <strong>{html.escape(who.identity.user)}</strong>.</p><ul class=\"tools\">{items}</ul>"
        page = page_html(title="Your tools", body_html=body, brand=brand, request_id=who.ctx.request_id)
        return HTMLResponse(page, headers={**_NO_STORE, "content-security-policy": PAGE_CSP})

    async def decision(request: Request) -> Response:
        who = caller(request.scope)
        if who is None:
            return error_response(request.scope, 401)
        if request.method == "POST":
            refusal = csrf_refusal(request.scope)
            if refusal is not None:
                return refusal
            raw = await request.body()
            if len(raw) > MAX_JSON_BYTES:
                return error_response(request.scope, 413)
            try:
                question = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                return error_response(request.scope, 400, detail="The body must be a JSON object.")
            if not isinstance(question, dict):
                return error_response(request.scope, 400, detail="The body must be a JSON object.")
        else:
            params = request.query_params
            question = {k: params.get(k) for k in ("path", "method", "at", "user", "email", "ip")}
            if "groups" in params:
                question["groups"] = ",".join(params.getlist("groups"))
        try:
            return _json(explain_access(services, who, question))
        except AccessError as exc:
            return error_response(request.scope, exc.status, detail=exc.message)

    from gateway.platform_features import not_found

    return [
        Route("/api/tools", tools, methods=["GET", "HEAD"]),
        Route("/api/policy/decision", decision, methods=["GET", "HEAD", "POST"]),
        # Below it is only the policy's virtual path (who may explain for anyone).
        Mount("/api/policy/decision", app=not_found),
    ]


class ApiFeature(BaseFeature):
    """``/api/tools`` and ``/api/policy/decision``."""

    name = "api"

    def __init__(self, services: "Services") -> None:
        self.services = services

    def routes(self) -> list[BaseRoute]:
        return api_routes(self.services)
