"""Branded error answers: HTML for browsers, JSON for API clients.

Every error the gateway produces goes through here so that each one carries
the request id and none ever shows a stack trace or a filesystem path.  The
HTML pages use only the gateway's own stylesheet and no script, so they run
under a strict Content-Security-Policy of their own.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.context import get_context

# Gateway-rendered pages need no script and no inline style: a much tighter
# policy than the one Streamlit's frontend needs.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

STATIC_PREFIX = "/_gateway/static"
API_PREFIXES = ("/api/", "/mcp", "/_stcore/", "/metrics", "/ws/")

_TITLES: dict[int, tuple[str, str, str]] = {
    # status: (code, title, message)
    400: ("bad_request", "Bad request", "The request could not be understood."),
    401: ("unauthorized", "Sign-in required", "You need to sign in to continue."),
    403: ("forbidden", "Access not granted", "You do not have access to this page."),
    404: ("not_found", "Page not found", "There is no page at this address."),
    405: ("method_not_allowed", "Method not allowed", "This address does not accept that method."),
    413: ("payload_too_large", "Request too large", "The request body is larger than this gateway accepts."),
    429: ("too_many_requests", "Too many attempts", "Too many attempts. Wait a moment and try again."),
    500: ("internal_error", "Something went wrong", "An unexpected error occurred. It has been logged."),
    503: ("unavailable", "Temporarily unavailable", "The service cannot handle requests right now. Try again shortly."),
}


def status_info(status: int) -> tuple[str, str, str]:
    return _TITLES.get(status, ("error", "Error", "The request could not be completed."))


def wants_json(scope: Scope) -> bool:
    """JSON for API clients, HTML for browsers.

    The ``Accept`` header decides when it names a type (a browser lists
    text/html first, even on an /api/ page such as the API docs); without one,
    or with only ``*/*``, API paths get JSON and everything else HTML.
    """
    accept = ""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value.decode("latin-1").lower()
            break
    html_at = accept.find("text/html")
    json_at = accept.find("json")
    if html_at != -1 and (json_at == -1 or html_at < json_at):
        return False
    if json_at != -1:
        return True
    path: str = scope.get("path", "")
    return path.startswith(API_PREFIXES)


def page_html(
    *,
    title: str,
    body_html: str,
    brand: str = "Toolgate",
    request_id: str = "",
    status: int | None = None,
) -> str:
    """The shared page frame of every gateway-rendered page (errors, sign-in)."""
    rid = (
        f'<p class="rid">Request ID: <code>{html.escape(request_id)}</code></p>' if request_id else ""
    )
    code = f'<p class="status">{status}</p>' if status else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{html.escape(title)} · {html.escape(brand)}</title>"
        f'<link rel="stylesheet" href="{STATIC_PREFIX}/gateway.css">'
        f'<link rel="icon" href="{STATIC_PREFIX}/logo.svg" type="image/svg+xml">'
        "</head><body>"
        '<main class="card">'
        f'<header class="brand"><img src="{STATIC_PREFIX}/logo.svg" alt="" width="28" height="28">'
        f"<span>{html.escape(brand)}</span></header>"
        f"{code}<h1>{html.escape(title)}</h1>{body_html}{rid}"
        "</main></body></html>"
    )


def error_response(
    scope: Scope,
    status: int,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra_html: str = "",
    extra_json: Mapping[str, Any] | None = None,
    brand: str = "Toolgate",
) -> Response:
    """A branded HTML or JSON error for ``scope``; ``detail`` must be safe to show."""
    ctx = get_context(scope)
    request_id = ctx.request_id if ctx else ""
    code, title, message = status_info(status)
    text = detail or message
    hdrs = {"cache-control": "no-store", **(headers or {})}
    if wants_json(scope):
        body: dict[str, Any] = {"status": status, "code": code, "message": text, "request_id": request_id}
        if extra_json:
            body.update(extra_json)
        return Response(orjson.dumps({"error": body}), status_code=status, headers=hdrs, media_type="application/json")
    hdrs.setdefault("content-security-policy", PAGE_CSP)
    body_html = f"<p>{html.escape(text)}</p>{extra_html}"
    if status in (403, 404):
        body_html += '<p><a class="button" href="/">Go to my tools</a></p>'
    page = page_html(title=title, body_html=body_html, brand=brand, request_id=request_id, status=status)
    return Response(page, status_code=status, headers=hdrs, media_type="text/html; charset=utf-8")


async def send_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    ws_close_code: int = 1008,
) -> None:
    """Answer with an error for http, or refuse a websocket handshake.

    A websocket is refused by closing before ``accept``; the server then
    answers the handshake with 403 and nothing reaches the application.
    """
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": ws_close_code, "reason": status_info(status)[0]})
        return
    response = error_response(scope, status, detail=detail, headers=headers)
    await response(scope, receive, send)
