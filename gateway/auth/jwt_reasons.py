"""Why pyjwt refused a token, as one short machine-readable reason.

API tokens and upstream assertions report refusals the same way (audit
``reason``, ``WWW-Authenticate``), so the mapping from pyjwt's exception
types lives here once.
"""

from __future__ import annotations

import jwt

# Most specific first: several of these subclass InvalidTokenError.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
)


def jwt_reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid"
