"""OpenID Connect relying party: authorization code + PKCE (S256).

This module talks to the provider; :mod:`gateway.auth.oidc_routes` talks to
the browser.  Trust rests on three things only:

* the provider's metadata, fetched from ``{issuer}/.well-known/openid-configuration``
  and accepted only when its ``issuer`` is the configured one;
* the ID token, obtained over the back channel with the PKCE verifier and
  verified against the provider's JWKS (PyJWKClient, fetched in a worker thread
  so the event loop never blocks): signature with an algorithm from the
  configured asymmetric list, ``iss``, ``aud`` (and ``azp`` when there are
  several audiences), ``exp``, ``iat`` and the ``nonce`` of this browser's flow;
* the userinfo response of that same provider, read only to fill claims the ID
  token lacks (providers in spec-conform mode put scope claims only there),
  and only when its ``sub`` is the ID token's ``sub``.

Claim mapping (documented for operators):

* user: the ``username_claim`` (default ``preferred_username``) when it is a
  usable string, else ``sub``.  Pick a claim the provider guarantees unique and
  not user-editable.
* email: the ``email`` claim, dropped when ``email_verified`` is false (the
  boolean, or the string ``"false"`` that some providers send).
* groups: the ``groups_claim``; a JSON list of strings, or one string with the
  groups separated by commas and/or whitespace.  Anything else means no groups.

Failures raise :class:`OIDCError` whose ``reason`` is the audit reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import httpx
import jwt
import structlog

from gateway.settings import OIDCSettings

log = structlog.get_logger(__name__)

# Audit reasons (``auth.login`` with outcome "failure").
BAD_STATE: Final = "bad_state"  # missing/expired/forged flow cookie, or state mismatch
REPLAYED_CODE: Final = "replayed_code"  # a callback of a flow that already ended
PROVIDER_ERROR: Final = "provider_error"  # the provider answered with ?error=
BAD_ISSUER: Final = "bad_issuer"  # discovery or the RFC 9207 `iss` parameter names another issuer
TOKEN_ERROR: Final = "token_error"  # the token endpoint refused the code
BAD_TOKEN: Final = "bad_token"  # the ID token (or userinfo) failed verification
BAD_NONCE: Final = "bad_nonce"  # the ID token belongs to another flow
PROVIDER_UNREACHABLE: Final = "provider_unreachable"  # network error, 5xx or unusable answer

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

_MAX_TOKEN_CHARS = 64 * 1024
_MAX_NAME_CHARS = 256
_MAX_GROUPS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class OIDCError(Exception):
    """A sign-in failed; ``reason`` is one of the module's reason constants.

    ``message`` is for logs and the audit ``details``; it never contains a
    token, code or secret.
    """

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = details


# ---------------------------------------------------------------- helpers


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)  # 86 chars of the unreserved alphabet
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge.rstrip(b"=").decode("ascii")


def safe_next(raw: str | None, default: str = "/") -> str:
    """``raw`` when it is a same-origin relative path, else ``default``.

    Browsers treat ``//host`` and ``/\\host`` as another origin and silently
    drop tabs and newlines (so ``/\\t/host`` becomes ``//host``); anything with
    a scheme, an authority, a backslash or a control character is refused.
    """
    if not raw or len(raw) > 2048 or not raw.startswith("/"):
        return default
    if raw.startswith("//") or "\\" in raw or _CONTROL.search(raw):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw


def clean_name(value: Any) -> str | None:
    """A printable, bounded, non-empty string, or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _MAX_NAME_CHARS or _CONTROL.search(value):
        return None
    return value


def parse_groups(value: Any) -> tuple[str, ...]:
    """Groups from a claim: a list of strings, or one comma/space separated string."""
    if isinstance(value, str):
        items: list[Any] = re.split(r"[,\s]+", value)
    elif isinstance(value, list):
        items = value
    else:
        return ()
    out: dict[str, None] = {}  # ordered, de-duplicated
    for item in items:
        name = clean_name(item)
        if name is not None and "," not in name:
            out[name] = None
        if len(out) >= _MAX_GROUPS:
            break
    return tuple(out)


def verified_email(claims: dict[str, Any], claim: str = "email") -> str:
    """The e-mail address, unless the provider says it is not verified."""
    verified = claims.get("email_verified")
    if verified is False or (isinstance(verified, str) and verified.strip().lower() == "false"):
        return ""
    email = clean_name(claims.get(claim))
    if email is None or len(email) > 254 or not _EMAIL.match(email):
        return ""
    return email


def constant_time_equal(a: Any, b: str) -> bool:
    """``a == b`` for a str ``a``, in time independent of where they differ."""
    return isinstance(a, str) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def error_code(value: Any) -> str:
    """A provider's OAuth ``error`` value when it is a plain code, else "unknown" (safe to log)."""
    return value if isinstance(value, str) and _ERROR_CODE.match(value) else "unknown"


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    token_endpoint_auth_methods: tuple[str, ...] = ("client_secret_basic",)
    iss_parameter_supported: bool = False


@dataclass(frozen=True)
class OIDCUser:
    """Who signed in, as the gateway will record it."""

    user: str
    email: str
    groups: tuple[str, ...]
    subject: str
    issuer: str
    display_name: str = ""


@dataclass
class _Cached:
    metadata: ProviderMetadata
    jwks: jwt.PyJWKClient
    fetched: float = field(default_factory=time.monotonic)


# ---------------------------------------------------------------- client


class OIDCClient:
    """The relying-party side of one provider (discovery, token, ID token).

    ``token_auth_method``: ``"auto"`` (client_secret_basic when a secret is
    set and the provider lists it or lists nothing, else client_secret_post;
    ``"none"`` without a secret), or one of ``client_secret_basic``,
    ``client_secret_post``, ``none`` to force it.
    """

    def __init__(
        self,
        settings: OIDCSettings,
        *,
        redirect_uri: str,
        token_auth_method: str = "auto",
        leeway_s: int = 60,
        discovery_ttl_s: float = 3600.0,
        jwks_ttl_s: float = 300.0,
        timeout_s: float = 10.0,
    ) -> None:
        bad = [a for a in settings.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if not settings.algorithms or bad:
            raise ValueError(f"OIDC algorithms must be asymmetric, not {bad or list(settings.algorithms)}")
        if token_auth_method not in ("auto", "client_secret_basic", "client_secret_post", "none"):
            raise ValueError(f"unknown token_auth_method {token_auth_method!r}")
        if token_auth_method.startswith("client_secret") and not settings.client_secret:
            raise ValueError(f"{token_auth_method} needs a client_secret")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"redirect_uri must be an absolute http(s) URL, got {redirect_uri!r}")
        self.settings = settings
        self.redirect_uri = redirect_uri
        self.token_auth_method = token_auth_method
        self.leeway_s = leeway_s
        self.discovery_ttl_s = discovery_ttl_s
        self.jwks_ttl_s = jwks_ttl_s
        self.timeout_s = timeout_s
        self._cached: _Cached | None = None

    # -- discovery

    @property
    def discovery_url(self) -> str:
        return self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def metadata(self) -> ProviderMetadata:
        return (await self._state()).metadata

    async def _state(self) -> _Cached:
        cached = self._cached
        if cached is not None and time.monotonic() - cached.fetched < self.discovery_ttl_s:
            return cached
        try:
            meta = await self._discover()
        except OIDCError as exc:
            # A provider blip must not lock everyone out when we already know
            # its (verified) metadata; a wrong issuer always fails.
            if cached is not None and exc.reason == PROVIDER_UNREACHABLE:
                log.warning("oidc.discovery_stale", issuer=self.settings.issuer, error=exc.message)
                return cached
            raise
        if cached is not None and cached.metadata.jwks_uri == meta.jwks_uri:
            jwks = cached.jwks
        else:
            jwks = jwt.PyJWKClient(
                meta.jwks_uri, cache_keys=False, lifespan=self.jwks_ttl_s, timeout=self.timeout_s
            )
        self._cached = _Cached(meta, jwks)
        return self._cached

    async def _discover(self) -> ProviderMetadata:
        doc = await self._get_json(self.discovery_url, what="discovery document")
        issuer = doc.get("issuer")
        expected = self.settings.issuer
        # The settings strip a trailing slash from the issuer; the provider's
        # own spelling (e.g. "https://tenant.auth0.com/") is the exact value
        # `iss` must then carry.
        if not isinstance(issuer, str) or issuer not in (expected, expected + "/"):
            raise OIDCError(
                BAD_ISSUER,
                "discovery document names another issuer",
                expected=expected,
                got=str(issuer)[:200],
            )
        https = urlsplit(issuer).scheme == "https"

        def endpoint(name: str, required: bool = True) -> str:
            value = doc.get(name)
            if value is None and not required:
                return ""
            parts = urlsplit(value) if isinstance(value, str) else None
            if parts is None or parts.scheme not in (("https",) if https else ("http", "https")) or not parts.hostname:
                raise OIDCError(PROVIDER_UNREACHABLE, f"discovery document has no usable {name}")
            return value

        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OIDCError(PROVIDER_UNREACHABLE, "provider does not support PKCE S256")
        auth_methods = doc.get("token_endpoint_auth_methods_supported")
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=endpoint("authorization_endpoint"),
            token_endpoint=endpoint("token_endpoint"),
            jwks_uri=endpoint("jwks_uri"),
            userinfo_endpoint=endpoint("userinfo_endpoint", required=False),
            token_endpoint_auth_methods=(
                tuple(m for m in auth_methods if isinstance(m, str))
                if isinstance(auth_methods, list)
                else ("client_secret_basic",)  # the spec's default
            ),
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
        )

    async def _get_json(self, url: str, *, what: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                resp = await http.get(url, headers={"accept": "application/json", **(headers or {})})
        except httpx.HTTPError as exc:
            raise OIDCError(PROVIDER_UNREACHABLE, f"cannot fetch {what}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise OIDCError(PROVIDER_UNREACHABLE, f"{what} answered HTTP {resp.status_code}")
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise OIDCError(PROVIDER_UNREACHABLE, f"{what} is not a JSON object")
        return doc

    # -- front channel

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        meta = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        sep = "&" if urlsplit(meta.authorization_endpoint).query else "?"
        return meta.authorization_endpoint + sep + urlencode(params, quote_via=quote)

    def check_callback_issuer(self, meta: ProviderMetadata, iss: str | None) -> None:
        """RFC 9207 mix-up defence: the ``iss`` response parameter, when sent, must match."""
        if iss is None:
            if meta.iss_parameter_supported:
                raise OIDCError(BAD_ISSUER, "callback lacks the iss parameter the provider promises")
            return
        if iss != meta.issuer:
            raise OIDCError(BAD_ISSUER, "callback iss names another issuer", got=iss[:200])

    # -- back channel

    def _auth_method(self, meta: ProviderMetadata) -> str:
        if self.token_auth_method != "auto":
            return self.token_auth_method
        if not self.settings.client_secret:
            return "none"
        if "client_secret_basic" in meta.token_endpoint_auth_methods:
            return "client_secret_basic"
        if "client_secret_post" in meta.token_endpoint_auth_methods:
            return "client_secret_post"
        return "client_secret_basic"

    async def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Redeem ``code`` at the token endpoint; the token response as a dict."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"accept": "application/json"}
        method = self._auth_method(meta)
        if method == "client_secret_basic":
            # RFC 6749 2.3.1: form-encode both parts before base64.
            creds = f"{quote(self.settings.client_id, safe='')}:{quote(self.settings.client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(creds.encode("utf-8")).decode("ascii")
        else:
            form["client_id"] = self.settings.client_id
            if method == "client_secret_post":
                form["client_secret"] = self.settings.client_secret
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                resp = await http.post(meta.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise OIDCError(PROVIDER_UNREACHABLE, f"token endpoint unreachable: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 500:
            raise OIDCError(PROVIDER_UNREACHABLE, f"token endpoint answered HTTP {resp.status_code}")
        if resp.status_code != 200 or not isinstance(body, dict):
            error = error_code(body.get("error") if isinstance(body, dict) else None)
            # invalid_grant is what a replayed, expired or PKCE-mismatched code gets.
            raise OIDCError(
                TOKEN_ERROR, f"token endpoint refused the code ({error})", error=error, status=resp.status_code
            )
        if not isinstance(body.get("id_token"), str):
            raise OIDCError(BAD_TOKEN, "token response has no id_token")
        return body

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The verified claims of ``id_token``, which must carry ``nonce``."""
        state = await self._state()
        meta = state.metadata
        if len(id_token) > _MAX_TOKEN_CHARS:
            raise OIDCError(BAD_TOKEN, "id_token too large")

        def verify() -> dict[str, Any]:
            # PyJWKClient fetches with urllib (blocking) on a cache miss, so
            # this whole function runs in a worker thread.
            key = state.jwks.get_signing_key_from_jwt(id_token)
            return jwt.decode(
                id_token,
                key,
                algorithms=list(self.settings.algorithms),
                audience=self.settings.client_id,
                issuer=meta.issuer,
                leeway=self.leeway_s,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )

        try:
            claims = await asyncio.to_thread(verify)
        except jwt.PyJWKClientConnectionError as exc:
            raise OIDCError(PROVIDER_UNREACHABLE, f"cannot fetch the provider's JWKS: {exc}") from None
        except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.InvalidTokenError) as exc:
            raise OIDCError(BAD_TOKEN, f"id_token rejected: {type(exc).__name__}: {exc}") from None

        aud = claims.get("aud")
        azp = claims.get("azp")
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise OIDCError(BAD_TOKEN, "id_token has several audiences but no azp")
        if azp is not None and azp != self.settings.client_id:
            raise OIDCError(BAD_TOKEN, "id_token azp names another client")
        if not isinstance(claims.get("sub"), str) or clean_name(claims["sub"]) is None:
            raise OIDCError(BAD_TOKEN, "id_token sub is not a usable string")
        if not constant_time_equal(claims.get("nonce"), nonce):
            raise OIDCError(BAD_NONCE, "id_token nonce does not match this sign-in")
        return claims

    async def userinfo(self, access_token: str, *, subject: str) -> dict[str, Any]:
        meta = await self.metadata()
        if not meta.userinfo_endpoint:
            return {}
        doc = await self._get_json(
            meta.userinfo_endpoint, what="userinfo", headers={"authorization": f"Bearer {access_token}"}
        )
        # OIDC Core 5.3.2: a userinfo answer for another subject must be ignored.
        if doc.get("sub") != subject:
            raise OIDCError(BAD_TOKEN, "userinfo sub differs from the id_token sub")
        return doc

    def user_from_claims(self, claims: dict[str, Any], issuer: str) -> OIDCUser:
        sub = clean_name(claims.get("sub"))
        if sub is None:
            raise OIDCError(BAD_TOKEN, "no usable sub claim")
        user = clean_name(claims.get(self.settings.username_claim)) or sub
        return OIDCUser(
            user=user,
            email=verified_email(claims),
            groups=parse_groups(claims.get(self.settings.groups_claim)),
            subject=sub,
            issuer=issuer,
            display_name=clean_name(claims.get("name")) or "",
        )

    async def complete(self, *, code: str, code_verifier: str, nonce: str) -> OIDCUser:
        """Exchange ``code``, verify the ID token, map the claims to a user."""
        tokens = await self.exchange_code(code, code_verifier)
        claims = await self.verify_id_token(tokens["id_token"], nonce=nonce)
        wanted = (self.settings.username_claim, self.settings.groups_claim, "email")
        access_token = tokens.get("access_token")
        if any(c not in claims for c in wanted) and isinstance(access_token, str) and access_token:
            extra = await self.userinfo(access_token, subject=claims["sub"])
            # The ID token is signed; where both carry a claim, it wins.
            claims = {**extra, **claims}
        return self.user_from_claims(claims, (await self.metadata()).issuer)
