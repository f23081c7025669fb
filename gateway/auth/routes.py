"""Sign-in, sign-out and who-am-I routes.

``GET /auth/login``   the branded sign-in form (hidden ``csrf_token`` and ``next``)
``POST /auth/login``  ``username``, ``password``, ``csrf_token``, ``next`` -> 303 to ``next``
``GET /auth/logout``  a one-button confirmation form (so a plain link can sign out safely)
``POST /auth/logout`` ``csrf_token`` -> session revoked, cookie cleared, 303 to the sign-in page
``GET /api/whoami``   JSON ``user``, ``email``, ``groups``, ``auth_method``, ``expires_at``

The pages carry no script (the gateway's page CSP forbids it) and use the
shared stylesheet under ``/_gateway/static/``.
"""

from __future__ import annotations

import html
import string
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth.csrf import CsrfProtect
from gateway.auth.ratelimit import LoginLimiter
from gateway.auth.sessions import SessionManager, SessionRecord, scope_https
from gateway.auth.users import UserDirectory
from gateway.context import RequestContext, get_context
from gateway.errors import PAGE_CSP, STATIC_PREFIX, error_response, page_html
from gateway.settings import Settings

log = structlog.get_logger(__name__)

TEMPLATE = string.Template((Path(__file__).resolve().parent.parent / "templates" / "login.html").read_text("utf-8"))
LOGIN_PATH = "/auth/login"
MAX_NEXT_CHARS = 2048
WRONG_CREDENTIALS = "Wrong username or password."
_NOTICES = {
    "expired_idle": "Your session expired after a period of inactivity. Please sign in again.",
    "expired_absolute": "Your session reached its time limit. Please sign in again.",
    "revoked": "Your session has ended. Please sign in again.",
}


def safe_next(value: object, default: str = "/") -> str:
    """``value`` when it is a same-origin relative path, else ``default``.

    Accepts only ``/path?query#fragment`` in printable ASCII.  Refuses
    ``//host``, ``/\\host`` (browsers read a backslash as a slash), any
    scheme, whitespace and control characters (browsers drop tabs and
    newlines, turning ``/\\t/evil`` into ``//evil``), and the same tricks
    hidden behind percent-encoding.  Sign-in pages themselves map to ``/``.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NEXT_CHARS:
        return default
    candidate = value
    for _ in range(3):  # look through up to three layers of percent-encoding
        if not candidate.startswith("/") or candidate.startswith("//") or "\\" in candidate:
            return default
        if any(not (0x21 <= ord(c) <= 0x7E) for c in candidate):
            return default
        decoded = unquote(candidate)
        if decoded == candidate:
            break
        candidate = decoded
    else:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if parts.path == "/auth" or parts.path.startswith("/auth/"):
        return default
    return value


def _ctx(request: Request) -> RequestContext | None:
    return get_context(request.scope)


def _client_ip(request: Request) -> str:
    ctx = _ctx(request)
    if ctx is not None:
        return ctx.client_ip
    return request.client.host if request.client else ""


def _same_origin(request: Request) -> bool:
    """A browser's ``Origin`` on a POST must be our own (when it names one).

    ``Origin: null`` is what browsers send under ``Referrer-Policy:
    no-referrer`` (our pages use it), so it cannot be refused; the CSRF
    token is the real check, this is defence in depth.
    """
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    ctx = _ctx(request)
    scheme = ctx.scheme if ctx else request.url.scheme
    host = (ctx.host if ctx and ctx.host else request.headers.get("host", "")).lower()
    return origin.lower() == f"{scheme}://{host}"


def auth_routes(
    *,
    sessions: SessionManager,
    users: UserDirectory,
    limiter: LoginLimiter,
    csrf: CsrfProtect,
    emit: Callable[..., None],
    settings: Settings,
    https: bool | None = None,
) -> list[BaseRoute]:
    """The sign-in routes.

    ``sessions``/``users``/``limiter``/``csrf``: the identity layer's parts;
    ``emit``: the audit callable (``auth.login``, ``auth.logout``);
    ``settings``: for the brand and the OIDC button (``auth.oidc.display_name``);
    ``https``: force the cookie flavour (None: ask the request context).
    """
    brand = settings.server.brand
    oidc = settings.auth.oidc

    def is_https(request: Request) -> bool:
        return https if https is not None else scope_https(request.scope)

    def audit(request: Request, action: str, outcome: str, **fields: Any) -> None:
        ctx = _ctx(request)
        emit(
            action,
            outcome=outcome,
            request_id=ctx.request_id if ctx else "",
            client_ip=_client_ip(request),
            user_agent=request.headers.get("user-agent", "")[:256],
            **fields,
        )

    def render(
        request: Request,
        *,
        status: int = 200,
        next_path: str = "/",
        username: str = "",
        error: str = "",
        notice: str = "",
        headers: dict[str, str] | None = None,
    ) -> Response:
        secure = is_https(request)
        token, new_cookie = csrf.issue(request.cookies, https=secure)
        ctx = _ctx(request)
        message = ""
        if error:
            message = f'<p class="error" role="alert">{html.escape(error)}</p>'
        elif notice:
            message = f'<p class="notice" role="status">{html.escape(notice)}</p>'
        sso = ""
        if oidc is not None:
            href = "/auth/oidc/start?next=" + quote(next_path, safe="")
            sso = (
                '<p class="divider">or</p>'
                f'<a class="button secondary sso" href="{html.escape(href)}">'
                f"Sign in with {html.escape(oidc.display_name)}</a>"
            )
        body = TEMPLATE.substitute(
            brand=html.escape(brand),
            static=STATIC_PREFIX,
            message=message,
            csrf_token=html.escape(token),
            next=html.escape(next_path),
            username=html.escape(username),
            focus_user="" if username else " autofocus",
            focus_password=" autofocus" if username else "",
            oidc=sso,
            request_id=html.escape(ctx.request_id if ctx else ""),
        )
        response = HTMLResponse(
            body,
            status_code=status,
            headers={"cache-control": "no-store", "content-security-policy": PAGE_CSP, **(headers or {})},
        )
        if new_cookie is not None:
            csrf.set_cookie(response, new_cookie, https=secure)
        return response

    async def login_page(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        ctx = _ctx(request)
        if ctx is not None and ctx.identity is not None and ctx.identity.session_id is not None:
            return RedirectResponse(next_path, status_code=303, headers={"cache-control": "no-store"})
        # Why the last session ended: from the cookie this request carried, or
        # from ``?reason=`` set by the redirect that sent the browser here
        # (that redirect already cleared the cookie).  Only fixed texts show.
        reason = str(ctx.extra.get("session_reason", "")) if ctx is not None else ""
        notice = _NOTICES.get(reason) or _NOTICES.get(request.query_params.get("reason", ""), "")
        if request.query_params.get("signed_out") == "1":
            notice = "You have been signed out."
        return render(request, next_path=next_path, notice=notice)

    async def login_submit(request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=16, max_part_size=8192)
        except Exception:  # noqa: BLE001 - malformed bodies are the client's problem
            return error_response(request.scope, 400, brand=brand)
        next_path = safe_next(form.get("next"))
        raw_user = form.get("username")
        username = raw_user.strip()[:128] if isinstance(raw_user, str) else ""
        raw_password = form.get("password")
        password = raw_password if isinstance(raw_password, str) else ""

        if not _same_origin(request) or not csrf.validate(request.cookies, form.get("csrf_token"), https=is_https(request)):
            audit(request, "auth.login", "failure", user=username, auth_method="password", reason="csrf")
            return render(
                request,
                status=403,
                next_path=next_path,
                username=username,
                error="This sign-in form has expired. Please try again.",
            )
        ip = _client_ip(request)
        decision = await limiter.attempt(username, ip)
        if not decision.allowed:
            audit(
                request,
                "auth.login",
                "failure",
                user=username,
                auth_method="password",
                reason="rate_limited",
                details={"limit": decision.scope, "retry_after": decision.retry_after},
            )
            return render(
                request,
                status=429,
                next_path=next_path,
                username=username,
                error=f"Too many sign-in attempts. Try again in {decision.retry_after} seconds.",
                headers={"retry-after": str(decision.retry_after)},
            )
        user = await users.authenticate(username, password) if username and password else None
        if user is None:
            audit(request, "auth.login", "failure", user=username, auth_method="password", reason="invalid_credentials")
            return render(request, status=401, next_path=next_path, username=username, error=WRONG_CREDENTIALS)

        await limiter.succeeded(username, ip)
        secure = is_https(request)
        response = RedirectResponse(next_path, status_code=303, headers={"cache-control": "no-store"})
        ctx = _ctx(request)
        previous = ctx.extra.get("session") if ctx is not None else None
        if isinstance(previous, SessionRecord):
            await sessions.store.revoke(previous.session_id, reason="replaced", now=sessions.clock())
        record = await sessions.start(
            response,
            user=user.name,
            email=user.email,
            groups=user.groups,
            auth_method="password",
            https=secure,
            client_ip=ip,
            user_agent=request.headers.get("user-agent", ""),
        )
        audit(
            request,
            "auth.login",
            "success",
            user=user.name,
            email=user.email,
            groups=list(user.groups),
            auth_method="password",
            session_id=record.session_id,
        )
        return response

    def logout_form(request: Request) -> Response:
        secure = is_https(request)
        token, new_cookie = csrf.issue(request.cookies, https=secure)
        ctx = _ctx(request)
        who = ctx.identity.user if ctx is not None and ctx.identity is not None else ""
        text = f"You are signed in as {html.escape(who)}." if who else "You are not signed in."
        body = (
            f"<p>{text}</p>"
            '<form method="post" action="/auth/logout" class="signout-form">'
            f'<input type="hidden" name="csrf_token" value="{html.escape(token)}">'
            '<button type="submit">Sign out</button></form>'
        )
        page = page_html(title="Sign out", body_html=body, brand=brand, request_id=ctx.request_id if ctx else "")
        response = HTMLResponse(
            page, headers={"cache-control": "no-store", "content-security-policy": PAGE_CSP}
        )
        if new_cookie is not None:
            csrf.set_cookie(response, new_cookie, https=secure)
        return response

    async def logout_page(request: Request) -> Response:
        return logout_form(request)

    async def logout_submit(request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
        except Exception:  # noqa: BLE001
            return error_response(request.scope, 400, brand=brand)
        secure = is_https(request)
        if not _same_origin(request) or not csrf.validate(request.cookies, form.get("csrf_token"), https=secure):
            return error_response(request.scope, 403, detail="This sign-out form has expired. Please try again.", brand=brand)
        response = RedirectResponse(f"{LOGIN_PATH}?signed_out=1", status_code=303, headers={"cache-control": "no-store"})
        ctx = _ctx(request)
        record = ctx.extra.get("session") if ctx is not None else None
        if isinstance(record, SessionRecord):
            await sessions.end(response, record, https=secure, reason="logout")
            audit(
                request,
                "auth.logout",
                "success",
                user=record.user,
                email=record.email,
                groups=list(record.groups),
                auth_method=record.auth_method,
                session_id=record.session_id,
            )
        else:
            sessions.clear_cookie(response, https=secure)
        return response

    async def whoami(request: Request) -> Response:
        ctx = _ctx(request)
        identity = ctx.identity if ctx is not None else None
        if identity is None:
            return error_response(request.scope, 401, brand=brand)
        body = {
            "user": identity.user,
            "email": identity.email,
            "groups": sorted(identity.groups),
            "auth_method": identity.auth_method,
            "expires_at": identity.expires_at,
        }
        return Response(
            orjson.dumps(body), media_type="application/json", headers={"cache-control": "no-store"}
        )

    return [
        Route(LOGIN_PATH, login_page, methods=["GET", "HEAD"]),
        Route(LOGIN_PATH, login_submit, methods=["POST"]),
        Route("/auth/logout", logout_page, methods=["GET", "HEAD"]),
        Route("/auth/logout", logout_submit, methods=["POST"]),
        Route("/api/whoami", whoami, methods=["GET", "HEAD"]),
    ]
