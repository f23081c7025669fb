"""API tokens: HS256 JWTs minted by ``gateway token create``, verified per request.

Keys come from ``auth.token_key_file`` (``kid:hexkey`` per line, first signs;
see :mod:`gateway.auth.keyring`).  The header's ``kid`` is only ever a key in
a dict: it is never a path, URL or anything else that could be steered.

Verification pins everything an attacker might vary: the algorithm list is
exactly ``["HS256"]`` (no ``none``, no RS/HS confusion), the signature must
match the key named by ``kid``, and ``exp``/``iat``/``nbf``/``iss``/``aud``/
``sub``/``jti`` must be present and right.  Tokens longer than their issuer's
``token_max_ttl_s`` are refused even when correctly signed.

A token can be withdrawn before it expires (with the users directory
given): by its id (``gateway token revoke JTI``: one leaked token, the
subject's others keep working), or with its subject - a disabled local
user's tokens are refused, and so is every token issued at or before the
subject's last revocation (``gateway users revoke``, ``passwd`` and
``disable`` set it, for local users and any other subject alike).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jwt

from gateway.auth.jwt_reasons import jwt_reason
from gateway.auth.keyring import KID_RE, KeyRing
from gateway.context import Identity

if TYPE_CHECKING:
    from gateway.auth.users import UserDirectory

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 8192
_FORBIDDEN_HEADERS = ("crit", "jku", "jwk", "x5u", "x5c")


_TOKEN_MESSAGES = {
    "expired": "token expired",
    "not_yet_valid": "token not yet valid",
    "bad_audience": "token audience not accepted",
    "bad_issuer": "token issuer not accepted",
    "bad_signature": "token signature invalid",
    "missing_claim": "token lacks {exc.claim}",
}


class TokenError(Exception):
    """The bearer token is not acceptable; ``reason`` is a short code, safe to log."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


def mint_token(
    keyring: KeyRing,
    *,
    subject: str,
    groups: Sequence[str],
    ttl_s: int,
    issuer: str,
    audience: str,
    max_ttl_s: int,
    email: str = "",
    clock: Callable[[], float] = time.time,
) -> tuple[str, dict[str, Any]]:
    """Sign a token with the ring's first key; returns ``(token, claims)``.

    ``ttl_s`` above ``max_ttl_s`` is capped to it.
    """
    if not subject or len(subject) > 256:
        raise ValueError("subject must be 1-256 characters")
    if ttl_s < 1:
        raise ValueError("ttl must be at least one second")
    ttl = min(int(ttl_s), int(max_ttl_s))
    now = int(clock())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
        "groups": list(dict.fromkeys(groups)),
    }
    if email:
        claims["email"] = email
    keyring.refresh()
    kid, key = keyring.signing
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})
    return token, claims


class TokenVerifier:
    """``verify(token) -> Identity`` or :class:`TokenError`."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        audience: str,
        max_ttl_s: int,
        leeway_s: float = 30.0,
        users: UserDirectory | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self.users = users
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.max_ttl_s = max_ttl_s
        self.leeway_s = leeway_s

    def verify(self, token: str) -> Identity:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("malformed", "token missing or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed", "token is not a JWT") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("bad_algorithm", "token algorithm not accepted")
        if any(h in header for h in _FORBIDDEN_HEADERS):
            raise TokenError("bad_header", "token header not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_RE.match(kid):
            raise TokenError("unknown_key", "token key id missing or malformed")
        self.keyring.refresh()
        key = self.keyring.by_id.get(kid)
        if key is None:
            raise TokenError("unknown_key", "token key id not known")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={
                    "require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"],
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError as exc:
            reason = jwt_reason(exc)
            raise TokenError(reason, _TOKEN_MESSAGES.get(reason, "token invalid").format(exc=exc)) from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
        if not isinstance(sub, str) or not sub or len(sub) > 256 or any(ord(c) < 32 for c in sub):
            raise TokenError("bad_subject", "token subject not accepted")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise TokenError("invalid", "token times invalid")
        if exp - iat > self.max_ttl_s + self.leeway_s:
            raise TokenError("ttl_too_long", "token lifetime exceeds the allowed maximum")
        groups = claims.get("groups", [])
        if not isinstance(groups, list) or len(groups) > 256 or not all(isinstance(g, str) for g in groups):
            raise TokenError("bad_groups", "token groups must be a list of strings")
        email = claims.get("email", "")
        if not isinstance(email, str) or len(email) > 254:
            raise TokenError("bad_email", "token email not accepted")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 128:
            raise TokenError("bad_jti", "token id not accepted")
        problem = self.credential_problem(sub, float(iat), jti)
        if problem is not None:
            raise TokenError(*problem)
        return Identity(
            user=sub,
            email=email,
            groups=frozenset(groups),
            auth_method="token",
            expires_at=float(exp),
            issued_at=float(iat),
            token_id=jti,
        )

    def credential_problem(self, sub: str, iat: float, jti: str) -> tuple[str, str] | None:
        """(reason, message) if a signed token was withdrawn since: revoked by id, its subject disabled, or revoked since ``iat``."""
        if self.users is None:
            return None
        if self.users.token_revoked(jti):
            return "revoked", "token revoked"
        local = self.users.get(sub)
        if local is not None and local.disabled:
            return "subject_disabled", "token subject is disabled"
        # "At or before": iat has whole seconds, so a token minted in the
        # second of a revocation is refused too (mint it again).
        if iat <= self.users.sessions_valid_after(sub):
            return "revoked", "token issued before its subject's credentials were revoked"
        return None
