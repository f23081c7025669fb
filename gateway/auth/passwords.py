"""Password hashing with stdlib scrypt, and the minimum-strength rule.

Encoded form (PHC-like, parameters travel with the hash so they can be
raised later without breaking existing users)::

    $scrypt$ln=15,r=8,p=1$<salt, base64 no padding>$<hash, base64 no padding>

``ln`` is log2(N).  Verification recomputes and compares in constant time.
Callers that must not reveal whether a user exists verify against
:func:`dummy_hash` for unknown users, so both paths cost one scrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024

_ENCODED_RE = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


@dataclass(frozen=True)
class ScryptParams:
    log2_n: int = 15  # N = 32768: twice the 2**14 floor, ~50-100 ms per hash
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    hash_bytes: int = 32

    def check(self) -> None:
        # Bounds also stop a hand-edited users file from making every login
        # allocate gigabytes (memory is 128 * r * N * p bytes).
        if not (14 <= self.log2_n <= 20 and 8 <= self.r <= 32 and 1 <= self.p <= 16):
            raise ValueError("scrypt parameters out of range (ln 14..20, r 8..32, p 1..16)")

    @property
    def maxmem(self) -> int:
        return 128 * self.r * (2**self.log2_n) * self.p * 2 + (1 << 20)


DEFAULT_PARAMS = ScryptParams()


class WeakPasswordError(ValueError):
    """The password does not meet the minimum rules (message says which)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _normalise(password: str) -> bytes:
    # NFC so the same typed password hashes the same on every keyboard/OS.
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _scrypt(password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=2**params.log2_n, r=params.r, p=params.p, maxmem=params.maxmem, dklen=dklen
    )


def hash_password(password: str, params: ScryptParams = DEFAULT_PARAMS) -> str:
    params.check()
    salt = os.urandom(params.salt_bytes)
    digest = _scrypt(_normalise(password), salt, params, params.hash_bytes)
    return f"$scrypt$ln={params.log2_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    m = _ENCODED_RE.match(encoded or "")
    if not m:
        raise ValueError("not a $scrypt$ hash")
    salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
    params = ScryptParams(int(m.group(1)), int(m.group(2)), int(m.group(3)), len(salt), len(digest))
    params.check()
    if len(salt) < 16 or not 16 <= len(digest) <= 64:
        raise ValueError("salt or hash too short")
    return params, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches; False for a wrong password or a bad hash."""
    try:
        params, salt, expected = parse_hash(encoded)
    except ValueError:
        # Still spend the time, so a broken entry does not stand out by speed.
        params, salt, expected = parse_hash(dummy_hash())
        _scrypt(_normalise(password[:MAX_PASSWORD_CHARS]), salt, params, len(expected))
        return False
    if len(password) > MAX_PASSWORD_CHARS:
        password = password[:MAX_PASSWORD_CHARS]
        expected = b""  # never matches, same cost
    actual = _scrypt(_normalise(password), salt, params, params.hash_bytes)
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash of a random password with the default parameters (computed once)."""
    return hash_password(base64.b64encode(os.urandom(24)).decode())


def needs_rehash(encoded: str, params: ScryptParams = DEFAULT_PARAMS) -> bool:
    try:
        current, _, _ = parse_hash(encoded)
    except ValueError:
        return True
    return (current.log2_n, current.r, current.p) < (params.log2_n, params.r, params.p)


def check_strength(password: str, *, username: str = "") -> None:
    """Refuse passwords that are short, trivial, or the user name itself."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPasswordError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPasswordError(f"password must be at most {MAX_PASSWORD_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise WeakPasswordError("password must not contain control characters")
    if len(set(password)) < 5:
        raise WeakPasswordError("password must use at least 5 different characters")
    if len(username) >= 3 and username.lower() in password.lower():
        raise WeakPasswordError("password must not contain the user name")
