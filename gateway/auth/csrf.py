"""CSRF tokens for the sign-in and sign-out forms, bound to a pre-session cookie.

The cookie (``__Host-toolgate_csrf`` on https, ``toolgate_csrf`` on http;
HttpOnly, SameSite=Lax) holds a random nonce signed with the session key
ring.  The form's hidden ``csrf_token`` is the same nonce, signed under a
different salt with a time stamp.  A POST is accepted only when both verify
and carry the same nonce, so an attacker's page can neither forge a token
(no key) nor reuse its own (it cannot set our cookie in the victim's
browser, and ``__Host-`` stops a sibling subdomain from doing so on https).
This blocks login CSRF: signing a victim in as the attacker.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Callable, Mapping

from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer
from starlette.responses import Response

from gateway.auth.keyring import KeyRing

COOKIE_HTTP = "toolgate_csrf"
COOKIE_HTTPS = "__Host-toolgate_csrf"
MAX_TOKEN_CHARS = 512


class CsrfProtect:
    """Issue and check form tokens.  ``max_age_s``: how long a rendered form stays valid."""

    def __init__(self, keyring: KeyRing, *, max_age_s: int = 2 * 3600, clock: Callable[[], float] = time.time) -> None:
        self.keyring = keyring
        self.max_age_s = max_age_s
        self._clock = clock
        self._version = -1
        self._cookie_signer: Signer | None = None
        self._form: URLSafeTimedSerializer | None = None

    @staticmethod
    def cookie_name(https: bool) -> str:
        return COOKIE_HTTPS if https else COOKIE_HTTP

    def _signers(self) -> tuple[Signer, URLSafeTimedSerializer]:
        self.keyring.refresh()
        if self._version != self.keyring.version or self._cookie_signer is None or self._form is None:
            keys = list(reversed(self.keyring.keys))  # itsdangerous signs with the last key
            kwargs = {"key_derivation": "hmac", "digest_method": hashlib.sha256}
            clock = self._clock

            class _ClockSigner(TimestampSigner):
                def get_timestamp(self) -> int:
                    return int(clock())

            self._cookie_signer = Signer(keys, salt="toolgate.csrf.cookie", **kwargs)
            self._form = URLSafeTimedSerializer(
                keys, salt="toolgate.csrf.form", signer=_ClockSigner, signer_kwargs=kwargs
            )
            self._version = self.keyring.version
        return self._cookie_signer, self._form

    def _nonce_from_cookie(self, cookies: Mapping[str, str], https: bool) -> str | None:
        value = cookies.get(self.cookie_name(https), "")
        if not value or len(value) > MAX_TOKEN_CHARS:
            return None
        signer, _ = self._signers()
        try:
            return signer.unsign(value).decode("ascii")
        except (BadData, UnicodeError):
            return None

    def issue(self, cookies: Mapping[str, str], *, https: bool) -> tuple[str, str | None]:
        """``(form token, new cookie value or None)``; reuses a valid existing cookie.

        Reuse keeps several open sign-in tabs working.
        """
        signer, form = self._signers()
        nonce = self._nonce_from_cookie(cookies, https)
        new_cookie = None
        if nonce is None:
            nonce = secrets.token_urlsafe(24)
            new_cookie = signer.sign(nonce).decode("ascii")
        token = form.dumps(nonce)
        return (token if isinstance(token, str) else token.decode("ascii")), new_cookie

    def set_cookie(self, response: Response, value: str, *, https: bool) -> None:
        response.set_cookie(
            self.cookie_name(https),
            value,
            max_age=self.max_age_s,
            path="/",
            secure=https,
            httponly=True,
            samesite="lax",
        )

    def validate(self, cookies: Mapping[str, str], token: object, *, https: bool) -> bool:
        """True only when the form token and the cookie carry the same nonce."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            return False
        nonce = self._nonce_from_cookie(cookies, https)
        if nonce is None:
            return False
        _, form = self._signers()
        try:
            claimed = form.loads(token, max_age=self.max_age_s)
        except (BadData, ValueError, TypeError):
            return False
        if not isinstance(claimed, str):
            return False
        return hmac.compare_digest(claimed.encode(), nonce.encode())
