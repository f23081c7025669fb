"""Key rings read from a file: the first key signs, every key verifies.

Two formats, one class:

* session keys (``session.keys_file``): one secret per line, at least 32
  characters, no whitespace inside.  ``#`` starts a comment line.
* token keys (``auth.token_key_file``): ``kid:hexkey`` per line; ``kid`` is
  1-64 of ``[A-Za-z0-9._-]``, ``hexkey`` at least 64 hex digits (32 bytes).

Rotation is a file edit (or ``gateway keys rotate``): put the new key first,
keep the old ones below it until every cookie or token they signed has
expired, then delete them.  The ring notices the change by ``stat`` (at most
once per ``check_interval_s``), reloads, and emits ``keys.rotated`` when the
signing key changed.  A file that stops parsing keeps the last good ring
serving, so a half-written edit never logs everybody out or opens anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

import structlog

from gateway.fsutil import atomic_write

log = structlog.get_logger(__name__)

MIN_SESSION_KEY_CHARS = 32
MIN_TOKEN_KEY_BYTES = 32
KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")

# (key id, secret bytes); the first entry signs.
KeyEntry = tuple[str, bytes]
Parser = Callable[[str], tuple[KeyEntry, ...]]


class KeyRingError(ValueError):
    """The key file is missing, empty or malformed (message names the line)."""


def fingerprint(secret: bytes) -> str:
    """A short, safe-to-log name for a secret (never the secret itself)."""
    return "sha256:" + hashlib.sha256(secret).hexdigest()[:12]


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def parse_session_keys(text: str) -> tuple[KeyEntry, ...]:
    out: list[KeyEntry] = []
    seen: set[bytes] = set()
    for number, line in _lines(text):
        if len(line) < MIN_SESSION_KEY_CHARS or any(c.isspace() for c in line):
            raise KeyRingError(
                f"line {number}: a session key must be at least {MIN_SESSION_KEY_CHARS} characters without spaces"
            )
        key = line.encode("utf-8")
        if key not in seen:
            seen.add(key)
            out.append((fingerprint(key), key))
    if not out:
        raise KeyRingError("no key found")
    return tuple(out)


def parse_token_keys(text: str) -> tuple[KeyEntry, ...]:
    out: list[KeyEntry] = []
    kids: set[str] = set()
    for number, line in _lines(text):
        kid, sep, hexkey = line.partition(":")
        kid, hexkey = kid.strip(), hexkey.strip()
        if not sep or not KID_RE.match(kid):
            raise KeyRingError(f"line {number}: expected kid:hexkey with kid of [A-Za-z0-9._-]{{1,64}}")
        if len(hexkey) % 2 or not _HEX_RE.match(hexkey) or len(hexkey) < 2 * MIN_TOKEN_KEY_BYTES:
            raise KeyRingError(f"line {number}: key must be at least {2 * MIN_TOKEN_KEY_BYTES} hex digits")
        if kid in kids:
            raise KeyRingError(f"line {number}: duplicate kid {kid!r}")
        kids.add(kid)
        out.append((kid, bytes.fromhex(hexkey)))
    if not out:
        raise KeyRingError("no key found")
    return tuple(out)


def new_session_key() -> str:
    """A fresh session key line (384 random bits as URL-safe text)."""
    return secrets.token_urlsafe(48)


def new_token_key_line(kid: str | None = None) -> str:
    """A fresh ``kid:hexkey`` line for the API-token ring."""
    kid = kid or time.strftime("k%Y%m%d") + "-" + secrets.token_hex(3)
    if not KID_RE.match(kid):
        raise KeyRingError(f"bad kid {kid!r}")
    return f"{kid}:{secrets.token_hex(32)}"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), 0o600)


class FileWatch:
    """Cheap change detection: one ``stat`` at most every ``interval_s``."""

    def __init__(self, path: Path, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self.signature = self.stat()

    def stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # inode catches atomic replaces, mtime_ns and size catch edits in place
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """True once per observed change of the file (throttled)."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        sig = self.stat()
        if sig == self.signature:
            return False
        self.signature = sig
        return True


class KeyRing:
    """Secrets from ``path``; ``entries[0]`` signs, all of them verify."""

    def __init__(
        self,
        path: Path | str,
        *,
        name: str = "session",
        parser: Parser = parse_session_keys,
        emit: Callable[..., None] | None = None,
        check_interval_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self._parse = parser
        self._emit = emit
        self._watch = FileWatch(self.path, check_interval_s)
        self.version = 0
        self.entries: tuple[KeyEntry, ...] = ()
        self.by_id: dict[str, bytes] = {}
        self._load(initial=True)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(k for _, k in self.entries)

    @property
    def signing(self) -> KeyEntry:
        return self.entries[0]

    def refresh(self) -> bool:
        """Reload if the file changed; True when the ring changed."""
        if not self._watch.changed():
            return False
        return self._load(initial=False)

    def _load(self, *, initial: bool) -> bool:
        try:
            entries = self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, KeyRingError) as exc:
            if initial:
                raise KeyRingError(f"{self.path}: {exc}") from None
            log.error("keyring.reload_failed", ring=self.name, path=str(self.path), error=str(exc))
            return False
        if entries == self.entries:
            return False
        old_first = self.entries[0][0] if self.entries else None
        self.entries = entries
        self.by_id = dict(entries)
        self.version += 1
        if not initial:
            log.info("keyring.reloaded", ring=self.name, keys=len(entries))
            if old_first != entries[0][0] and self._emit is not None:
                self._emit(
                    "keys.rotated",
                    outcome="success",
                    details={"ring": self.name, "key_id": entries[0][0], "key_count": len(entries)},
                )
        return True
