"""Redaction: the last line of defence against secrets reaching the audit trail.

Callers must never pass secrets to ``emit``; this processor exists because
mistakes happen (an exception message quoting a header, a token in a URL, a
password typed into a form field that ends up in ``details``).  Two rules:

* a dict key that names a secret (password, token, secret, cookie,
  authorization, csrf ... see SECRET_KEY_PARTS) has its whole value replaced,
  at any depth of ``gateway.details``;
* secret-looking text (JWTs, ``Bearer``/``Basic`` credentials, ``key=value``
  pairs whose key names a secret, ``Cookie:``/``Authorization:`` header lines,
  PEM private keys, well-known API key formats) is masked inside free-text
  fields: ``url.path``, ``user_agent.original``, ``event.reason``,
  ``user.name``, ``user.email`` and every string in ``gateway.details``.

Regex scanning costs ~10 us per string, so results for short strings are
cached: user agents and paths repeat, which keeps the per-event cost near a
dict lookup.  The cache belongs to one Redactor, used by one writer thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import re
import uuid
from typing import Any

REDACTED = "[REDACTED]"

SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "cookie",
    "authorization",
    "csrf",
    "xsrf",
    "apikey",
    "privatekey",
    "credential",
)

_VALUE_PATTERNS = re.compile(
    r"""
    (?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)
  | (?P<scheme>\b(?i:bearer|basic|digest|token)[ ]+)[A-Za-z0-9._~+/=-]{8,}
  | (?P<header>\b(?i:proxy-authorization|authorization|set-cookie|cookie|x-csrf-token|x-xsrf-token)[ ]*:[ ]*)[^\r\n]+
  | (?P<kv>\b(?i:[a-z0-9_.-]*(?:password|passwd|passphrase|token|secret|api[_-]?key|csrf|xsrf|session|sid|cookie|credential)[a-z0-9_.-]*)[ ]*=[ ]*)[^\s&;,"'<>]+
  | (?P<pem>-----BEGIN[A-Z ]*PRIVATE[ ]KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE[ ]KEY-----|\Z))
  | (?P<known>\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|sk_(?:live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}))
    """,
    re.X,
)

_CACHE_MAX_LEN = 512
_MAX_DEPTH = 16


@functools.lru_cache(maxsize=2048)
def is_secret_key(key: str) -> bool:
    """True when a field name says its value is a secret (``X-CSRF-Token``, ``set_cookie``...)."""
    n = key.lower().replace("-", "").replace("_", "")
    return any(p in n for p in SECRET_KEY_PARTS)


def _mask(m: re.Match[str]) -> str:
    g = m.lastgroup
    if g == "jwt":
        return "[REDACTED:jwt]"
    if g in ("scheme", "header", "kv"):
        return m.group(g) + REDACTED
    return REDACTED


def redact_text(s: str) -> str:
    """Mask secret-looking substrings of one string (uncached)."""
    return _VALUE_PATTERNS.sub(_mask, s) if len(s) >= 8 else s


class _FieldCache(dict):  # type: ignore[type-arg]
    """``cache[value]`` -> the value as recorded for one field: clipped, then redacted.

    The writer looks every free-text value up here; user agents, paths, user
    names repeat, so the regex scan runs once per distinct string.  Only
    strings of at most ``_CACHE_MAX_LEN`` characters are kept, and the cache
    is emptied when full (no eviction bookkeeping on the hot path).
    Unhashable values raise TypeError before reaching ``__missing__``; the
    caller then uses :meth:`Redactor.value` directly.
    """

    def __init__(self, limit: int | None, redactor: "Redactor", size: int) -> None:
        super().__init__()
        self.limit = limit
        self.redactor = redactor
        self.size = size

    def __missing__(self, v: Any) -> Any:
        if not isinstance(v, str):
            return self.redactor.value(v)
        s = v
        if self.limit is not None and len(s) > self.limit:
            s = s[: self.limit] + "...[truncated]"
        r = redact_text(s)
        if v.__class__ is str and len(v) <= _CACHE_MAX_LEN:
            if len(self) >= self.size:
                self.clear()
            self[v] = r
        return r


class Redactor:
    """structlog processor masking secrets in an ECS record (see module doc).

    Also the redaction step of the writer's pipeline: :meth:`field_caches`
    hands :class:`~gateway.audit.schema.ToECS` one cache per free-text field
    and :meth:`value` does ``gateway.details``, so records are redacted while
    they are assembled rather than walked again afterwards.
    """

    def __init__(self, cache_size: int = 8192) -> None:
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size
        self._secret_keys: dict[Any, bool] = {}

    def field_caches(self, max_len: dict[str, int]) -> tuple[_FieldCache, ...]:
        """(user name, email, path, user agent, reason) caches: value -> clipped and redacted."""
        size = self._cache_size
        return (
            _FieldCache(max_len["user"], self, size),
            _FieldCache(max_len["email"], self, size),
            _FieldCache(max_len["path"], self, size),
            _FieldCache(max_len["user_agent"], self, size),
            _FieldCache(None, self, size),
        )

    def text(self, s: str) -> str:
        r = self._cache.get(s)
        if r is None:
            r = redact_text(s)
            if len(s) <= _CACHE_MAX_LEN:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[s] = r
        return r

    def _secret_key(self, k: Any) -> bool:
        r = self._secret_keys.get(k)
        if r is None:
            r = isinstance(k, str) and is_secret_key(k)
            if len(self._secret_keys) >= 4096:
                self._secret_keys.clear()
            self._secret_keys[k] = r
        return r

    def value(self, v: Any, depth: int = 0) -> Any:
        """A copy of ``v`` with secrets masked: secret-named keys at any depth, secret-looking text anywhere.

        Values orjson would write through ``str()`` (paths, exceptions, other
        objects) are turned into text here, so they are redacted too.
        """
        cls = v.__class__
        if cls is str:
            return self.text(v)
        if v is None or cls is int or cls is float or cls is bool:
            return v
        if depth >= _MAX_DEPTH:
            return "[TRUNCATED]"
        if isinstance(v, dict):
            secret = self._secret_key
            return {k: (REDACTED if secret(k) else self.value(x, depth + 1)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(x, depth + 1) for x in v]
        if isinstance(v, (set, frozenset)):
            out = [self.value(x, depth + 1) for x in v]
            try:
                out.sort()
            except TypeError:
                pass
            return out
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, (int, float, bytes, bytearray, memoryview, datetime.date, datetime.time, uuid.UUID)):
            return v  # numbers as they are; raw bytes are never written ("[N bytes omitted]")
        if isinstance(v, enum.Enum):
            return self.value(v.value, depth + 1)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self.value({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, depth)
        return self.text(str(v))

    def __call__(self, logger: Any, method: str, rec: dict[str, Any]) -> dict[str, Any]:
        text = self.text
        c = rec.get("url")
        if c is not None and c.get("path").__class__ is str:
            c["path"] = text(c["path"])
        c = rec.get("user_agent")
        if c is not None and c.get("original").__class__ is str:
            c["original"] = text(c["original"])
        c = rec["event"]
        if c.get("reason").__class__ is str:
            c["reason"] = text(c["reason"])
        c = rec.get("user")
        if c is not None:
            if c.get("name").__class__ is str:
                c["name"] = text(c["name"])
            if c.get("email").__class__ is str:
                c["email"] = text(c["email"])
        c = rec.get("gateway")
        if c is not None:
            d = c.get("details")
            if d is not None:
                c["details"] = self.value(d)
        return rec
