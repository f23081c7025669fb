"""The browser side of OIDC sign-in: ``GET /auth/oidc/start`` and ``GET /auth/callback``.

``start`` creates the flow secrets (``state``, ``nonce``, PKCE verifier) and
binds them to this browser in a short-lived signed cookie (itsdangerous, the
session key list: first key signs, all verify), then sends the browser to the
provider.  ``callback`` accepts the provider's answer only with that cookie
and a matching ``state``, spends the flow (a flow is single use: the cookie is
deleted and its ``state`` remembered until the cookie would have expired), has
:class:`~gateway.auth.oidc.OIDCClient` redeem the code and verify the ID token,
starts a session and redirects (303) to the validated ``next`` path.

One flow per browser at a time: a second "sign in" tab replaces the cookie, so
the first tab's callback fails with ``bad_state`` and the user starts again.

Every outcome is audited as ``auth.login`` (``auth_method="oidc"``); failures
carry ``reason`` (see the constants in :mod:`gateway.auth.oidc`) and show a
branded page that explains nothing an attacker could use.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Callable, Protocol, Sequence

import structlog
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth import oidc
from gateway.auth.oidc import OIDCClient, OIDCError, safe_next
from gateway.context import get_context
from gateway.errors import error_response
from gateway.settings import OIDCSettings
from gateway.state.once import MemoryOneTimeStore, OneTimeStore

# The sign-in flow's state, between /auth/oidc/... and /auth/callback.
COOKIE_HTTP = "toolgate_oidc"
COOKIE_HTTPS = "__Host-toolgate_oidc"

log = structlog.get_logger(__name__)

START_PATH = "/auth/oidc/start"
CALLBACK_PATH = "/auth/callback"
FLOW_MAX_AGE_S = 600
FLOW_SALT = "toolgate.oidc.flow"


class SessionStarter(Protocol):
    """What this module needs of ``gateway.auth.sessions.SessionManager``."""

    async def start(
        self,
        response: Response,
        *,
        user: str,
        email: str,
        groups: Sequence[str],
        auth_method: str,
        https: bool,
        client_ip: str = "",
        user_agent: str = "",
    ) -> Any: ...


Emit = Callable[..., None]


class KeySource(Protocol):
    """A key ring (``gateway.auth.keyring.KeyRing``): first key signs, all verify."""

    @property
    def keys(self) -> Sequence[bytes]: ...

    def refresh(self) -> bool: ...


SigningKeys = Sequence[bytes] | KeySource

# (status, text shown to the user) per failure reason.
_USER_MESSAGES: dict[str, tuple[int, str]] = {
    oidc.BAD_STATE: (400, "This sign-in attempt has expired or was started in another window. Please sign in again."),
    oidc.REPLAYED_CODE: (400, "This sign-in link has already been used. Please sign in again."),
    oidc.PROVIDER_ERROR: (401, "The identity provider did not complete the sign-in."),
    oidc.BAD_ISSUER: (503, "Single sign-on is misconfigured. Please contact your administrator."),
    oidc.TOKEN_ERROR: (401, "The identity provider did not accept this sign-in. Please sign in again."),
    oidc.BAD_TOKEN: (401, "The identity provider's answer could not be verified. Please sign in again."),
    oidc.BAD_NONCE: (401, "The identity provider's answer could not be verified. Please sign in again."),
    oidc.PROVIDER_UNREACHABLE: (503, "The identity provider cannot be reached right now. Try again shortly."),
}


class OIDCLogin:
    """The two endpoints, their flow cookie and their audit events."""

    def __init__(
        self,
        *,
        client: OIDCClient,
        sessions: SessionStarter,
        emit: Emit,
        signing_keys: SigningKeys,
        https: bool,
        brand: str = "Toolgate",
        login_path: str = "/auth/login",
        spent: OneTimeStore | None = None,
    ) -> None:
        """``spent``: where finished flows are remembered so a replayed
        callback fails; the shared (Redis) store in a fleet, else in-process."""
        self._keys = signing_keys
        if not self._current_keys():
            raise ValueError("signing_keys must hold at least one key")
        self.client = client
        self.sessions = sessions
        self.emit = emit
        self.https = https
        self.brand = brand
        self.login_path = login_path
        self.cookie_name = COOKIE_HTTPS if https else COOKIE_HTTP
        self._spent: OneTimeStore = spent if spent is not None else MemoryOneTimeStore()

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(START_PATH, self.start, methods=["GET"], name="oidc_start"),
            Route(CALLBACK_PATH, self.callback, methods=["GET"], name="oidc_callback"),
        ]

    # -- endpoints

    async def start(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier, challenge = oidc.pkce_pair()
        try:
            url = await self.client.authorization_url(state=state, nonce=nonce, code_challenge=challenge)
        except OIDCError as exc:
            return self._fail(request, exc)
        response = RedirectResponse(url, status_code=302, headers={"cache-control": "no-store"})
        flow = self._serializer().dumps({"s": state, "n": nonce, "v": verifier, "x": next_path})
        response.set_cookie(
            self.cookie_name,
            flow,
            max_age=FLOW_MAX_AGE_S,
            path="/",
            secure=self.https,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        try:
            flow = await self._read_flow(request)
            meta = await self.client.metadata()
            self.client.check_callback_issuer(meta, _single(request, "iss"))
            error = _single(request, "error")
            if error is not None:
                code = oidc.error_code(error)
                raise OIDCError(oidc.PROVIDER_ERROR, f"provider answered error={code}", error=code)
            code = _single(request, "code")
            if not code:
                raise OIDCError(oidc.PROVIDER_ERROR, "callback with neither code nor error")
            user = await self.client.complete(code=code, code_verifier=flow["v"], nonce=flow["n"])
        except OIDCError as exc:
            return self._fail(request, exc)

        response = RedirectResponse(safe_next(flow["x"]), status_code=303, headers={"cache-control": "no-store"})
        self._clear_cookie(response)
        client_ip, user_agent = _client(request)
        record = await self.sessions.start(
            response,
            user=user.user,
            email=user.email,
            groups=list(user.groups),
            auth_method="oidc",
            https=self.https,
            client_ip=client_ip,
            user_agent=user_agent,
        )
        fields: dict[str, Any] = {}
        session_id = getattr(record, "session_id", None)
        if isinstance(session_id, str):
            fields["session_id"] = session_id
        self.emit(
            "auth.login",
            outcome="success",
            user=user.user,
            email=user.email,
            groups=list(user.groups),
            auth_method="oidc",
            client_ip=client_ip,
            user_agent=user_agent,
            details={"issuer": user.issuer, "sub": user.subject},
            **fields,
        )
        log.info("oidc.login", user=user.user, issuer=user.issuer)
        return response

    # -- flow cookie

    def _current_keys(self) -> list[bytes]:
        keys = self._keys
        if hasattr(keys, "refresh") and hasattr(keys, "keys"):
            keys.refresh()  # a rotated key file takes effect without a restart
            return list(keys.keys)
        return list(keys)  # type: ignore[arg-type]

    def _serializer(self) -> URLSafeTimedSerializer:
        # itsdangerous signs with the LAST key; our key files list the signing key first.
        return URLSafeTimedSerializer(
            list(reversed(self._current_keys())),
            salt=FLOW_SALT,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )

    async def _read_flow(self, request: Request) -> dict[str, str]:
        raw = request.cookies.get(self.cookie_name)
        if not raw:
            raise OIDCError(oidc.BAD_STATE, "no sign-in flow cookie")
        try:
            flow = self._serializer().loads(raw, max_age=FLOW_MAX_AGE_S)
        except BadSignature:  # includes SignatureExpired
            raise OIDCError(oidc.BAD_STATE, "flow cookie invalid or expired") from None
        if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in ("s", "n", "v", "x")):
            raise OIDCError(oidc.BAD_STATE, "flow cookie malformed")
        state = _single(request, "state")
        if state is None or not oidc.constant_time_equal(state, flow["s"]):
            raise OIDCError(oidc.BAD_STATE, "state does not match this browser's sign-in")
        if not await self._spent.spend(flow["s"], FLOW_MAX_AGE_S + 60):
            raise OIDCError(oidc.REPLAYED_CODE, "this sign-in flow was already completed or failed")
        return flow

    def _clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie_name, path="/", secure=self.https, httponly=True, samesite="lax")

    def _fail(self, request: Request, exc: OIDCError) -> Response:
        status, text = _USER_MESSAGES.get(exc.reason, (401, "Sign-in failed. Please sign in again."))
        client_ip, user_agent = _client(request)
        self.emit(
            "auth.login",
            outcome="failure",
            reason=exc.reason,
            auth_method="oidc",
            client_ip=client_ip,
            user_agent=user_agent,
            details={"message": exc.message, **exc.details},
        )
        log.warning("oidc.login_failed", reason=exc.reason, message=exc.message)
        response = error_response(
            request.scope,
            status,
            detail=text,
            brand=self.brand,
            extra_html=f'<p><a class="button" href="{self.login_path}">Sign in again</a></p>',
        )
        if request.url.path == CALLBACK_PATH:
            self._clear_cookie(response)
        return response


def _single(request: Request, name: str) -> str | None:
    """A query parameter that must appear at most once (a repeated one is refused)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise OIDCError(oidc.BAD_STATE, f"repeated {name} parameter")
    return values[0] if values else None


def _client(request: Request) -> tuple[str, str]:
    ctx = get_context(request.scope)
    ip = ctx.client_ip if ctx else (request.client.host if request.client else "")
    ua = (ctx.user_agent if ctx and ctx.user_agent else request.headers.get("user-agent", ""))[:512]
    return ip, ua


def oidc_routes(
    *,
    settings: OIDCSettings,
    public_url: str,
    sessions: SessionStarter,
    emit: Emit,
    signing_keys: SigningKeys,
    brand: str = "Toolgate",
    https: bool | None = None,
    client: OIDCClient | None = None,
    spent: OneTimeStore | None = None,
) -> list[BaseRoute]:
    """``GET /auth/oidc/start?next=/path`` and ``GET /auth/callback``.

    ``public_url`` is the scheme and host the browser sees; the redirect URI
    registered at the provider must be ``{public_url}/auth/callback``.
    ``https`` defaults to ``public_url`` being https (cookie ``__Host-`` prefix
    and ``Secure``).  ``signing_keys``: the session keys, first signs, all
    verify: a list of bytes, or the session ``KeyRing`` itself (then a
    rotated key file is picked up without a restart).  ``client``: a ready
    :class:`OIDCClient` (e.g. to force ``token_auth_method``); by default one
    is built from ``settings``.
    """
    base = public_url.rstrip("/")
    if client is None:
        client = OIDCClient(settings, redirect_uri=base + CALLBACK_PATH)
    login = OIDCLogin(
        client=client,
        sessions=sessions,
        emit=emit,
        signing_keys=signing_keys,
        https=base.startswith("https://") if https is None else https,
        brand=brand,
        spent=spent,
    )
    return login.routes
