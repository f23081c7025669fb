"""Identity asserted by an identity-aware proxy in front of the gateway.

Google IAP (``x-goog-iap-jwt-assertion``), Cloudflare Access
(``cf-access-jwt-assertion``) and similar proxies sign a JWT per request and
send it in a header.  :class:`UpstreamVerifier` accepts that JWT only when it
is signed by a key from the proxy's JWKS with an algorithm from a fixed
asymmetric list, is addressed to our audience, comes from the configured
issuer (when one is set) and carries ``exp`` and ``iat``.

The plain-text identity headers these proxies also send
(``x-goog-authenticated-user-email``, ``cf-access-authenticated-user-email``,
...) prove nothing and are never read here; the authentication middleware
strips them.

Unlike the OIDC ID token (fetched by us over a back channel), this header
reaches us from whoever can connect, on every request.  So the JWKS is fetched
with httpx (async, never blocking the event loop), cached, and re-fetched for
an unknown ``kid`` at most once per cool-down, so a stream of forged tokens
with random ``kid`` values cannot turn into a stream of requests to the proxy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import structlog

from gateway.auth.jwt_reasons import jwt_reason
from gateway.auth.oidc import (
    ASYMMETRIC_ALGORITHMS,
    clean_name,
    parse_groups,
    verified_email,
)
from gateway.context import Identity
from gateway.settings import UpstreamSettings

log = structlog.get_logger(__name__)

_MAX_TOKEN_CHARS = 16 * 1024


_ASSERTION_MESSAGES = {
    "expired": "assertion has expired",
    "not_yet_valid": "assertion issued in the future",
    "bad_audience": "assertion is for another audience",
    "bad_issuer": "assertion comes from another issuer",
    "missing_claim": "assertion lacks {exc.claim}",
    "bad_signature": "signature does not verify",
}

class UpstreamAssertionError(Exception):
    """The assertion is absent, malformed, forged, expired or not for us.

    ``reason`` is a short code for the audit trail (``malformed``,
    ``bad_algorithm``, ``unknown_key``, ``bad_signature``, ``expired``,
    ``not_yet_valid``, ``bad_audience``, ``bad_issuer``, ``missing_claim``,
    ``invalid``, ``no_user``, ``jwks_unavailable``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class UpstreamUnavailable(UpstreamAssertionError):
    """The proxy's JWKS cannot be fetched and no usable cached copy exists.

    A subclass so callers may answer 503 instead of 401; refusing is still
    the only safe outcome.
    """


class JWKSCache:
    """An async, cached view of one JWKS URL.

    ``ttl_s``: how long a fetched set is fresh.  After that it is re-fetched;
    if that fails the old set keeps serving for at most ``max_stale_s`` more.
    ``cooldown_s``: minimum time between fetches caused by an unknown ``kid``.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 300.0,
        max_stale_s: float = 3600.0,
        cooldown_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.max_stale_s = max_stale_s
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0  # for tests and metrics

    async def key(self, kid: str, alg: str) -> jwt.PyJWK:
        now = time.monotonic()
        fresh = self._fetched_at is not None and now - self._fetched_at < self.ttl_s
        if not fresh:
            await self._refresh(force=True)
        elif kid not in self._keys and now - self._last_attempt >= self.cooldown_s:
            await self._refresh(force=False)
        if self._fetched_at is None or time.monotonic() - self._fetched_at > self.ttl_s + self.max_stale_s:
            raise UpstreamUnavailable("jwks_unavailable", f"no usable JWKS from {self.url}")
        data = self._keys.get(kid)
        if data is None:
            raise UpstreamAssertionError("unknown_key", "no key with this kid in the proxy's JWKS")
        if "alg" in data and data["alg"] != alg:
            raise UpstreamAssertionError("bad_algorithm", "token alg differs from its key's alg")
        try:
            # The key is bound to `alg`; a key of another type (an RSA key
            # named by an ES256 token, say) fails here.
            return jwt.PyJWK(data, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise UpstreamAssertionError("bad_algorithm", f"key {kid!r} cannot verify {alg}: {exc}") from None

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            # Another task may have fetched while we waited for the lock.
            if now - self._last_attempt < (1.0 if force else self.cooldown_s):
                return
            self._last_attempt = now
            try:
                keys = await self._fetch()
            except UpstreamAssertionError as exc:
                log.warning("upstream.jwks_fetch_failed", url=self.url, error=exc.message)
                return
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        self.fetch_count += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as http:
                resp = await http.get(self.url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamAssertionError("jwks_unavailable", f"fetch failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise UpstreamAssertionError("jwks_unavailable", f"HTTP {resp.status_code}")
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise UpstreamAssertionError("jwks_unavailable", "not a JWK Set")
        keys: dict[str, dict[str, Any]] = {}
        for item in doc["keys"]:
            if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
                continue
            if item.get("use", "sig") != "sig" or item.get("kty") == "oct":
                continue  # encryption keys and shared secrets never verify assertions
            keys[item["kid"]] = item
        if not keys:
            raise UpstreamAssertionError("jwks_unavailable", "JWK Set has no signing keys")
        return keys


class UpstreamVerifier:
    """Verifies the proxy's signed assertion and turns it into an :class:`Identity`."""

    def __init__(self, settings: UpstreamSettings, *, leeway_s: int = 30, jwks: JWKSCache | None = None) -> None:
        bad = [a for a in settings.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if not settings.algorithms or bad:
            raise ValueError(f"upstream algorithms must be asymmetric, not {bad or list(settings.algorithms)}")
        if not settings.audience:
            raise ValueError("upstream audience is required")
        self.settings = settings
        self.header = settings.header.strip().lower()
        self.leeway_s = leeway_s
        self.algorithms = tuple(settings.algorithms)
        self.jwks = jwks or JWKSCache(settings.jwks_url)

    async def verify(self, token: str) -> Identity:
        """The verified identity in ``token``; raises :class:`UpstreamAssertionError`."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise UpstreamAssertionError("malformed", "empty or oversized assertion")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise UpstreamAssertionError("malformed", "not a JWS compact token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise UpstreamAssertionError("bad_algorithm", f"algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UpstreamAssertionError("unknown_key", "assertion has no kid")
        key = await self.jwks.key(kid, alg)
        required = ["exp", "iat", "aud"] + (["iss"] if self.settings.issuer else [])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.audience,
                issuer=self.settings.issuer or None,
                leeway=self.leeway_s,
                options={"require": required},
            )
        except jwt.InvalidTokenError as exc:
            reason = jwt_reason(exc)
            text = _ASSERTION_MESSAGES.get(reason, "{name}: {exc}").format(exc=exc, name=type(exc).__name__)
            raise UpstreamAssertionError(reason, text) from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        s = self.settings
        user = clean_name(claims.get(s.username_claim)) or clean_name(claims.get("sub"))
        if user is None:
            raise UpstreamAssertionError("no_user", f"assertion has neither {s.username_claim} nor sub")
        exp = claims.get("exp")
        return Identity(
            user=user,
            email=verified_email(claims, s.email_claim),
            groups=frozenset(parse_groups(claims.get(s.groups_claim))),
            auth_method="upstream",
            expires_at=float(exp) if isinstance(exp, (int, float)) else None,
            display_name=clean_name(claims.get("name")) or "",
        )
