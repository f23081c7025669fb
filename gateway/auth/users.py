"""The local users file (``auth.users_file``): TOML, 0600, written atomically.

Format (the CLI writes it; hand edits are fine)::

    [users."alice"]
    password = "$scrypt$ln=15,r=8,p=1$...$..."
    email = "alice@example.com"
    groups = ["employees"]
    disabled = false
    sessions_valid_after = 1732530000.5   # sessions issued before this are dead
    created_at = 1732530000.5

    [revoked_subjects]                    # for subjects that are not local users
    "bob@example.com" = 1732530000.5

The server and the CLI are different processes, so the file is also how the
CLI ends sessions: a password change, ``disable`` or ``revoke`` bumps
``sessions_valid_after`` and the server, which re-reads the file when it
changes, refuses every session issued before that instant.

User names are case-insensitive (stored lower-case) so ``Alice`` and
``alice`` cannot be two accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import structlog

from gateway.auth.keyring import FileWatch, write_private
from gateway.auth.passwords import check_strength, dummy_hash, hash_password, verify_password

log = structlog.get_logger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
EMAIL_RE = re.compile(r"^[^@\s,;<>\"'\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
HEADER = "# Toolgate local users, managed by `gateway users`. Keep this file private (mode 0600).\n"


# Each scrypt holds tens of megabytes: bound how many run at once so a burst
# of sign-ins cannot exhaust memory (extra ones wait in their worker thread).
_SCRYPT_SLOTS = threading.BoundedSemaphore(max(2, min(8, os.cpu_count() or 2)))


def _bounded_verify(password: str, encoded: str) -> bool:
    with _SCRYPT_SLOTS:
        return verify_password(password, encoded)


class UserError(ValueError):
    """A users-file operation was refused (message is safe to show)."""


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str
    email: str = ""
    groups: tuple[str, ...] = ()
    disabled: bool = False
    sessions_valid_after: float = 0.0
    created_at: float = 0.0


@dataclass(frozen=True)
class UsersSnapshot:
    users: dict[str, UserRecord] = field(default_factory=dict)
    revoked: dict[str, float] = field(default_factory=dict)  # subject -> credentials void at or before
    revoked_tokens: dict[str, float] = field(default_factory=dict)  # API token jti -> kept until (its expiry)


# What `gateway token create` puts in jti (secrets.token_urlsafe), with room for other issuers' ids.
JTI_RE = re.compile(r"[A-Za-z0-9_.~-]{1,128}\Z")


def normalise_username(name: str) -> str:
    return name.strip().lower()


def validate_username(name: str) -> str:
    n = normalise_username(name)
    if not USERNAME_RE.match(n):
        raise UserError("user name must be 1-128 of a-z 0-9 . _ @ + - and start with a letter or digit")
    return n


def validate_groups(groups: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in groups:
        g = g.strip()
        if not g:
            continue
        if not GROUP_RE.match(g):
            raise UserError(f"bad group name {g[:64]!r} (letters, digits and . _ : @ / + - only)")
        if g not in out:
            out.append(g)
    return tuple(out)


def validate_email(email: str) -> str:
    email = email.strip()
    if email and (len(email) > 254 or not EMAIL_RE.match(email)):
        raise UserError(f"bad email address {email[:64]!r}")
    return email


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("not a finite number")
    return float(v)


def parse_users(text: str) -> UsersSnapshot:
    """Parse the file; malformed entries are skipped (they cannot sign in)."""
    data = tomllib.loads(text)
    users: dict[str, UserRecord] = {}
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise ValueError("[users] must be a table")
    for raw_name, entry in table.items():
        try:
            name = validate_username(raw_name)
            if not isinstance(entry, dict) or not isinstance(entry.get("password", ""), str):
                raise ValueError("entry must be a table with a string password")
            groups = entry.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError("groups must be a list of strings")
            disabled = entry.get("disabled", False)
            if not isinstance(disabled, bool):
                raise ValueError("disabled must be true or false")
            users[name] = UserRecord(
                name=name,
                password_hash=entry.get("password", ""),
                email=validate_email(str(entry.get("email", ""))),
                groups=validate_groups(groups),
                disabled=disabled,
                sessions_valid_after=_num(entry.get("sessions_valid_after", 0.0)),
                created_at=_num(entry.get("created_at", 0.0)),
            )
        except (ValueError, UserError) as exc:
            log.error("users.bad_entry", user=str(raw_name)[:64], error=str(exc))
    revoked = _timestamps(data, "revoked_subjects", lambda k: True, "users.bad_revocation")
    tokens = _timestamps(data, "revoked_tokens", lambda k: bool(JTI_RE.match(k)), "users.bad_token_revocation")
    return UsersSnapshot(users, revoked, tokens)


def _timestamps(data: dict[str, Any], table: str, key_ok: Callable[[str], bool], log_event: str) -> dict[str, float]:
    """A ``[table]`` of key = unix time; entries with a bad key or value are logged and skipped."""
    raw = data.get(table, {})
    if not isinstance(raw, dict):
        raise ValueError(f"[{table}] must be a table")
    out: dict[str, float] = {}
    for k, v in raw.items():
        try:
            if not key_ok(k):
                raise ValueError("bad key")
            out[k] = _num(v)
        except ValueError:
            log.error(log_event, key=str(k)[:64])
    return out


def _toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def render_users(snap: UsersSnapshot) -> str:
    parts = [HEADER]
    for name in sorted(snap.users):
        u = snap.users[name]
        parts.append(
            f"\n[users.{_toml_str(name)}]\n"
            f"password = {_toml_str(u.password_hash)}\n"
            f"email = {_toml_str(u.email)}\n"
            f"groups = [{', '.join(_toml_str(g) for g in u.groups)}]\n"
            f"disabled = {'true' if u.disabled else 'false'}\n"
            f"sessions_valid_after = {float(u.sessions_valid_after)!r}\n"
            f"created_at = {float(u.created_at)!r}\n"
        )
    parts += _render_timestamps("[revoked_subjects]", snap.revoked)
    parts += _render_timestamps("[revoked_tokens]  # jti = until when it is kept (the token's expiry)", snap.revoked_tokens)
    return "".join(parts)


def _render_timestamps(header: str, entries: dict[str, float]) -> list[str]:
    """A table of key = unix time (what :func:`_timestamps` reads back); nothing when empty."""
    if not entries:
        return []
    return [f"\n{header}\n", *(f"{_toml_str(k)} = {float(entries[k])!r}\n" for k in sorted(entries))]


class UserDirectory:
    """Read access for the server (reloads on change) and edits for the CLI."""

    def __init__(
        self,
        path: Path | str,
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        warm: bool = True,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._watch = FileWatch(self.path, check_interval_s)
        self._snap = UsersSnapshot()
        self._load(initial=True)
        if warm:
            dummy_hash()  # computed once now, so the first unknown user is not faster

    # ------------------------------------------------------------ reading

    def _load(self, *, initial: bool) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not initial:
                log.warning("users.file_missing", path=str(self.path))
            self._snap = UsersSnapshot()  # deleting the file removes every local user
            return
        except (OSError, UnicodeDecodeError) as exc:
            log.error("users.read_failed", path=str(self.path), error=str(exc))
            return
        try:
            self._snap = parse_users(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            # Keep the last good directory: its revocations stay in force.
            log.error("users.parse_failed", path=str(self.path), error=str(exc))
            return
        try:
            if os.stat(self.path).st_mode & 0o077:
                log.warning("users.file_not_private", path=str(self.path))
        except OSError:
            pass

    def _current(self) -> UsersSnapshot:
        if self._watch.changed():
            self._load(initial=False)
        return self._snap

    def snapshot(self) -> UsersSnapshot:
        """The users in force (immutable; a new object after every reload)."""
        return self._current()

    def get(self, name: str) -> UserRecord | None:
        return self._current().users.get(normalise_username(name))

    def list_users(self) -> list[UserRecord]:
        snap = self._current()
        return [snap.users[n] for n in sorted(snap.users)]

    def sessions_valid_after(self, subject: str) -> float:
        """Sessions of ``subject`` issued at or before this instant are void."""
        snap = self._current()
        user = snap.users.get(normalise_username(subject))
        return max(user.sessions_valid_after if user else 0.0, snap.revoked.get(subject, 0.0))

    def _candidate(self, name: str) -> tuple[UserRecord | None, str]:
        """The user who may sign in (or None) and the hash to check against.

        Unknown, disabled and password-less users get the dummy hash, so the
        answer costs the same scrypt either way and timing tells nothing.
        """
        user = self.get(name) if len(name) <= 256 else None
        if user is None or user.disabled or not user.password_hash:
            return None, dummy_hash()
        return user, user.password_hash

    def verify(self, name: str, password: str) -> UserRecord | None:
        """The user when the password matches; None otherwise (same cost either way)."""
        user, encoded = self._candidate(name)
        ok = _bounded_verify(password, encoded)
        return user if ok and user is not None else None

    async def authenticate(self, name: str, password: str) -> UserRecord | None:
        """:meth:`verify` with the scrypt off the event loop (it takes tens of ms)."""
        user, encoded = self._candidate(name)  # file reads stay on the loop thread
        ok = await asyncio.to_thread(_bounded_verify, password, encoded)
        return user if ok and user is not None else None

    # ------------------------------------------------------------ editing (CLI)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[UsersSnapshot]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent / f".{self.path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            try:
                snap = parse_users(text)
            except (ValueError, tomllib.TOMLDecodeError) as exc:
                raise UserError(f"{self.path} is not valid ({exc}); fix it before editing") from None
            yield snap
        finally:
            os.close(fd)

    def _save(self, snap: UsersSnapshot) -> None:
        write_private(self.path, render_users(snap))
        self._snap = snap
        self._watch.signature = self._watch.stat()

    def add(self, name: str, password: str, *, groups: Sequence[str] = (), email: str = "") -> UserRecord:
        name = validate_username(name)
        check_strength(password, username=name)
        record = UserRecord(
            name=name,
            password_hash=hash_password(password),
            email=validate_email(email),
            groups=validate_groups(groups),
            created_at=self._clock(),
        )
        with self._locked() as snap:
            if name in snap.users:
                raise UserError(f"user {name!r} already exists (use `gateway users passwd`)")
            self._save(replace(snap, users={**snap.users, name: record}))
        return record

    def _update(self, name: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        name = validate_username(name)
        with self._locked() as snap:
            user = snap.users.get(name)
            if user is None:
                raise UserError(f"no such user {name!r}")
            updated = change(user)
            self._save(replace(snap, users={**snap.users, name: updated}))
        return updated

    def set_password(self, name: str, password: str) -> UserRecord:
        check_strength(password, username=normalise_username(name))
        new_hash = hash_password(password)
        now = self._clock()
        return self._update(name, lambda u: replace(u, password_hash=new_hash, sessions_valid_after=now))

    def set_disabled(self, name: str, disabled: bool) -> UserRecord:
        now = self._clock()
        if disabled:
            return self._update(name, lambda u: replace(u, disabled=True, sessions_valid_after=now))
        return self._update(name, lambda u: replace(u, disabled=False))

    def set_groups(self, name: str, groups: Sequence[str]) -> UserRecord:
        valid = validate_groups(groups)
        return self._update(name, lambda u: replace(u, groups=valid))

    def token_revoked(self, jti: str) -> bool:
        """True for an API token revoked by its id (``gateway token revoke``)."""
        return jti in self._current().revoked_tokens

    def revoke_token(self, jti: str, *, until: float) -> None:
        """Refuse the API token ``jti`` from now on; the entry is dropped after ``until`` (its expiry)."""
        if not isinstance(jti, str) or not JTI_RE.match(jti):
            raise UserError("bad token id (jti)")
        now = self._clock()
        with self._locked() as snap:
            # Expired tokens are refused anyway: their entries go.
            kept = {j: t for j, t in snap.revoked_tokens.items() if t >= now}
            kept[jti] = max(float(until), kept.get(jti, 0.0))
            self._save(replace(snap, revoked_tokens=kept))

    def revoke_sessions(self, subject: str) -> None:
        """End every session of ``subject`` (a local user or any other subject)."""
        subject = subject.strip()
        if not subject or len(subject) > 256 or any(ord(c) < 32 for c in subject):
            raise UserError("bad subject")
        now = self._clock()
        with self._locked() as snap:
            local = snap.users.get(normalise_username(subject))
            if local is not None:
                users = {**snap.users, local.name: replace(local, sessions_valid_after=now)}
                self._save(replace(snap, users=users))
            else:
                self._save(replace(snap, revoked={**snap.revoked, subject: now}))
