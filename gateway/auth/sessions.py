"""Server-side sessions behind a signed cookie.

The cookie carries only ``[session id, subject, issue time]``, signed with
itsdangerous under the session key ring (first key signs, all verify).  All
state that matters (timeouts, revocation) lives in a :class:`SessionStore`,
so a stolen-but-revoked cookie is worthless and sign-out really ends a
session.  Local-user changes made by the CLI (another process) reach running
servers through the users file: a session issued before the user's
``sessions_valid_after`` is refused.

Cookie: ``__Host-toolgate_session`` on https (Secure, no Domain, Path=/),
``toolgate_session`` on plain http; always HttpOnly and SameSite=Lax.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import structlog
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from starlette.responses import Response

from gateway.auth.keyring import KeyRing
from gateway.context import Identity, get_context
from gateway.settings import SessionSettings

if TYPE_CHECKING:
    from gateway.auth.users import UserDirectory

log = structlog.get_logger(__name__)

COOKIE_HTTP = "toolgate_session"
COOKIE_HTTPS = "__Host-toolgate_session"
MAX_COOKIE_CHARS = 4096
VERIFIED_CACHE_SIZE = 10_000
REASONS = ("ok", "missing", "bad_signature", "expired_idle", "expired_absolute", "revoked", "unknown")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    user: str
    email: str
    groups: tuple[str, ...]
    auth_method: str  # password | oidc | ...
    created_at: float
    last_seen: float
    expires_at: float  # absolute deadline
    client_ip: str = ""
    user_agent: str = ""
    revoked_at: float | None = None
    revoked_reason: str = ""


class SessionStore(Protocol):
    """Where sessions live.  All methods are cheap; ``now`` is unix seconds.

    ``revoke`` returns the record only when this call revoked it (so the
    caller audits a revocation once); ``revoke_user`` returns those it
    revoked.  Revoked records may be kept as tombstones until they expire.
    ``sweep`` forgets records past their absolute deadline or idle for
    ``idle_timeout_s``, and returns how many it forgot.
    """

    async def create(self, record: SessionRecord) -> None: ...
    async def get(self, session_id: str) -> SessionRecord | None: ...
    async def touch(self, session_id: str, now: float) -> SessionRecord | None: ...
    async def revoke(self, session_id: str, *, reason: str, now: float) -> SessionRecord | None: ...
    async def revoke_user(self, user: str, *, reason: str, now: float) -> list[SessionRecord]: ...
    async def sweep(self, now: float, idle_timeout_s: float) -> int: ...
    async def count(self) -> int: ...


class MemorySessionStore:
    """In-process store: a dict, plus an index by user for ``revoke_user``.

    ``max_sessions`` bounds memory; when full the oldest session is dropped
    (its user signs in again) rather than refusing new sign-ins.
    """

    def __init__(self, *, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions = max_sessions
        self._by_id: dict[str, SessionRecord] = {}
        self._by_user: dict[str, set[str]] = {}

    def _forget(self, session_id: str) -> None:
        rec = self._by_id.pop(session_id, None)
        if rec is not None:
            ids = self._by_user.get(rec.user)
            if ids is not None:
                ids.discard(session_id)
                if not ids:
                    del self._by_user[rec.user]

    async def create(self, record: SessionRecord) -> None:
        while len(self._by_id) >= self.max_sessions:
            self._forget(next(iter(self._by_id)))  # dicts keep insertion order: oldest first
        self._by_id[record.session_id] = record
        self._by_user.setdefault(record.user, set()).add(record.session_id)

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._by_id.get(session_id)

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        rec = self._by_id.get(session_id)
        if rec is None or rec.revoked_at is not None:
            return rec
        rec = replace(rec, last_seen=max(rec.last_seen, now))
        self._by_id[session_id] = rec
        return rec

    async def revoke(self, session_id: str, *, reason: str, now: float) -> SessionRecord | None:
        rec = self._by_id.get(session_id)
        if rec is None or rec.revoked_at is not None:
            return None
        rec = replace(rec, revoked_at=now, revoked_reason=reason)
        self._by_id[session_id] = rec
        return rec

    async def revoke_user(self, user: str, *, reason: str, now: float) -> list[SessionRecord]:
        out = []
        for sid in list(self._by_user.get(user, ())):
            rec = await self.revoke(sid, reason=reason, now=now)
            if rec is not None:
                out.append(rec)
        return out

    async def sweep(self, now: float, idle_timeout_s: float) -> int:
        dead = [
            sid
            for sid, rec in self._by_id.items()
            if now >= rec.expires_at or now >= rec.last_seen + idle_timeout_s
        ]
        for sid in dead:
            self._forget(sid)
        return len(dead)

    async def count(self) -> int:
        return len(self._by_id)


def _signer_with_clock(clock: Callable[[], float]) -> type[TimestampSigner]:
    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return _ClockSigner


def _noop_emit(action: str, *, outcome: str | None = None, **fields: Any) -> None:
    return None


class SessionManager:
    """Creates, resolves and ends sessions; owns the cookie format.

    ``touch_interval_s`` bounds how often activity is written to the store
    (idle time is therefore measured with that granularity, never longer).
    """

    def __init__(
        self,
        settings: SessionSettings,
        store: SessionStore,
        keyring: KeyRing,
        *,
        users: "UserDirectory",
        emit: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
        touch_interval_s: float = 60.0,
        sweep_interval_s: float = 60.0,
    ) -> None:
        if settings.idle_timeout_s <= 0 or settings.absolute_timeout_s <= 0:
            raise ValueError("session timeouts must be positive")
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.users = users
        self.emit = emit or _noop_emit
        self.clock = clock
        self.touch_interval_s = min(touch_interval_s, settings.idle_timeout_s / 4)
        self.sweep_interval_s = sweep_interval_s
        self._next_sweep = 0.0
        self._signer_cls = _signer_with_clock(clock)
        self._ser_version = -1
        self._ser: dict[bool, URLSafeTimedSerializer] = {}
        # Cookies whose signature already verified under the current ring:
        # (https, cookie) -> (session id, subject, signed-at).  Only verified
        # values enter, so it cannot be poisoned; it is dropped on any key
        # change.  Revocation and timeouts are still checked on every call.
        self._verified: dict[tuple[bool, str], tuple[str, str, float]] = {}
        # session id -> (stored record, users snapshot, validated record,
        # identity): the users-file checks and the Identity for a record the
        # store handed out before, under the same users file, are not redone
        # on every request.  Keyed on object identity, so any change to the
        # record (touch, revoke, group edit) or to the users file misses.
        self._memo: dict[str, tuple[SessionRecord, object, SessionRecord, Identity | None]] = {}

    # ------------------------------------------------------------ cookie format

    @staticmethod
    def cookie_name(https: bool) -> str:
        return COOKIE_HTTPS if https else COOKIE_HTTP

    def _serializer(self, https: bool) -> URLSafeTimedSerializer:
        self.keyring.refresh()
        if self._ser_version != self.keyring.version:
            # itsdangerous signs with the *last* key of the list; ours is first.
            keys = list(reversed(self.keyring.keys))
            kwargs = {"key_derivation": "hmac", "digest_method": hashlib.sha256}
            # Different salts per scheme: a cookie issued over http never
            # verifies as the https cookie (cookie tossing across schemes).
            self._ser = {
                flag: URLSafeTimedSerializer(
                    keys,
                    salt=f"toolgate.session.v1.{'https' if flag else 'http'}",
                    signer=self._signer_cls,
                    signer_kwargs=kwargs,
                )
                for flag in (False, True)
            }
            self._ser_version = self.keyring.version
            self._verified.clear()  # a removed key must stop verifying at once
        return self._ser[https]

    def set_cookie(self, response: Response, record: SessionRecord, *, https: bool) -> None:
        value = self._serializer(https).dumps([record.session_id, record.user, int(record.created_at)])
        response.set_cookie(
            self.cookie_name(https),
            value,
            max_age=self.settings.absolute_timeout_s,
            path="/",
            secure=https,
            httponly=True,
            samesite="lax",
        )

    def clear_cookie_header(self, https: bool) -> bytes:
        """A ``Set-Cookie`` value that deletes the session cookie."""
        attrs = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax"
        return (self.cookie_name(https) + '=""' + attrs + ("; Secure" if https else "")).encode("latin-1")

    def clear_cookie(self, response: Response, *, https: bool) -> None:
        response.raw_headers.append((b"set-cookie", self.clear_cookie_header(https)))

    # ------------------------------------------------------------ lifecycle

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
    ) -> SessionRecord:
        """Create a session for a user who just proved who they are, and set its cookie.

        Always a fresh id (no fixation).  Emits nothing: the caller audits the login.
        """
        if not user or not isinstance(user, str):
            raise ValueError("user must be a non-empty string")
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval_s
            await self.store.sweep(now, self.settings.idle_timeout_s)
        record = SessionRecord(
            session_id=secrets.token_urlsafe(32),
            user=user,
            email=email or "",
            groups=tuple(dict.fromkeys(str(g) for g in groups)),
            auth_method=auth_method,
            created_at=now,
            last_seen=now,
            expires_at=now + self.settings.absolute_timeout_s,
            client_ip=client_ip[:64],
            user_agent=user_agent[:256],
        )
        await self.store.create(record)
        self.set_cookie(response, record, https=https)
        return record

    async def resolve(self, cookie_value: str, *, https: bool) -> tuple[SessionRecord | None, str]:
        """The live session behind ``cookie_value`` and ``"ok"``, or None and why not."""
        if not cookie_value:
            return None, "missing"
        if len(cookie_value) > MAX_COOKIE_CHARS:
            return None, "bad_signature"
        serializer = self._serializer(https)  # refreshes the ring, clears the cache on change
        cached = self._verified.get((https, cookie_value))
        if cached is None:
            try:
                payload, signed_at = serializer.loads(
                    cookie_value, max_age=self.settings.absolute_timeout_s, return_timestamp=True
                )
            except SignatureExpired:
                return None, "expired_absolute"
            except (BadData, ValueError, TypeError, UnicodeError):
                return None, "bad_signature"
            if (
                not isinstance(payload, list)
                or len(payload) != 3
                or not isinstance(payload[0], str)
                or not isinstance(payload[1], str)
            ):
                return None, "bad_signature"
            cached = (payload[0], payload[1], signed_at.timestamp())
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[(https, cookie_value)] = cached
        session_id, subject, signed_at_ts = cached
        if self.clock() - signed_at_ts > self.settings.absolute_timeout_s:
            return None, "expired_absolute"
        record = await self.store.get(session_id)
        if record is None or record.user != subject:
            return None, "unknown"
        return await self._validate(record)

    async def check(self, record: SessionRecord) -> tuple[SessionRecord | None, str]:
        """Re-validate a session already resolved (long-lived websockets)."""
        current = await self.store.get(record.session_id)
        if current is None:
            return None, "unknown"
        return await self._validate(current)

    async def _validate(self, record: SessionRecord) -> tuple[SessionRecord | None, str]:
        now = self.clock()
        if record.revoked_at is not None:
            return None, "revoked"
        if now >= min(record.expires_at, record.created_at + self.settings.absolute_timeout_s):
            return None, "expired_absolute"
        if now >= record.last_seen + self.settings.idle_timeout_s:
            return None, "expired_idle"
        snap = self.users.snapshot()
        memo = self._memo.get(record.session_id)
        if memo is not None and memo[0] is record and memo[1] is snap:
            return memo[2], "ok"
        checked = await self._check_user(record)
        if checked is not None:
            if len(self._memo) >= VERIFIED_CACHE_SIZE:
                self._memo.clear()
            self._memo[record.session_id] = (record, snap, checked, None)
            return checked, "ok"
        return None, "revoked"

    async def _check_user(self, record: SessionRecord) -> SessionRecord | None:
        """The record with the users file applied, or None (and the session revoked) when its user may not go on."""
        why = ""
        local = self.users.get(record.user)
        if local is not None and local.disabled:
            why = "user_disabled"
        elif local is None and record.auth_method == "password":
            why = "user_removed"
        elif self.users.sessions_valid_after(record.user) >= record.created_at:
            why = "sessions_invalidated"
        if why:
            self._memo.pop(record.session_id, None)
            await self._revoke(record.session_id, reason=why)
            return None
        if local is not None and record.auth_method == "password":
            # Group and email edits in the users file apply at once.
            if local.groups != record.groups or local.email != record.email:
                record = replace(record, groups=local.groups, email=local.email)
        return record

    async def touch(self, record: SessionRecord) -> SessionRecord:
        """Record activity for the idle timeout, at most once per ``touch_interval_s``."""
        now = self.clock()
        if now - record.last_seen < self.touch_interval_s:
            return record
        updated = await self.store.touch(record.session_id, now)
        if updated is None or updated.revoked_at is not None:
            return record
        return replace(updated, groups=record.groups, email=record.email)

    async def end(self, response: Response, record: SessionRecord, *, https: bool, reason: str) -> None:
        """Revoke the session server-side and clear its cookie (the caller audits)."""
        await self.store.revoke(record.session_id, reason=reason, now=self.clock())
        self.clear_cookie(response, https=https)

    async def _revoke(self, session_id: str, *, reason: str, actor: str = "") -> bool:
        rec = await self.store.revoke(session_id, reason=reason, now=self.clock())
        if rec is None:
            return False
        self._audit_revoked(rec, reason, actor)
        return True

    def _audit_revoked(self, rec: SessionRecord, reason: str, actor: str) -> None:
        self.emit(
            "session.revoked",
            outcome="success",
            user=rec.user,
            session_id=rec.session_id,
            auth_method=rec.auth_method,
            reason=reason,
            **({"details": {"actor": actor}} if actor else {}),
        )

    async def revoke(self, session_id: str, *, reason: str = "admin", actor: str = "") -> bool:
        """Revoke one session (admin action); audited as ``session.revoked``."""
        return await self._revoke(session_id, reason=reason, actor=actor)

    async def revoke_user(self, user: str, *, reason: str = "admin", actor: str = "") -> int:
        """Revoke every session of ``user`` held by this store; audited per session."""
        revoked = await self.store.revoke_user(user, reason=reason, now=self.clock())
        for rec in revoked:
            self._audit_revoked(rec, reason, actor)
        return len(revoked)

    async def sweep(self) -> int:
        return await self.store.sweep(self.clock(), self.settings.idle_timeout_s)

    # ------------------------------------------------------------ views

    def expires_at(self, record: SessionRecord) -> float:
        absolute = min(record.expires_at, record.created_at + self.settings.absolute_timeout_s)
        return min(absolute, record.last_seen + self.settings.idle_timeout_s)

    def identity(self, record: SessionRecord) -> Identity:
        memo = self._memo.get(record.session_id)
        if memo is not None and memo[2] is record:
            if memo[3] is None:
                self._memo[record.session_id] = memo = (*memo[:3], self._identity(record))
            return memo[3]  # type: ignore[return-value]
        return self._identity(record)

    def _identity(self, record: SessionRecord) -> Identity:
        return Identity(
            user=record.user,
            email=record.email,
            groups=frozenset(record.groups),
            auth_method=record.auth_method,
            session_id=record.session_id,
            expires_at=self.expires_at(record),
        )


# ------------------------------------------------------------ scope helpers


def scope_https(scope: Any) -> bool:
    """Does the *browser* see https?  The request-context layer decided (proxy-aware)."""
    ctx = get_context(scope)
    if ctx is not None:
        return ctx.scheme == "https"
    return scope.get("scheme") in ("https", "wss")


def unquote_cookie_value(value: str) -> str:
    """The value without surrounding blanks and one matched pair of double quotes (RFC 6265 allows them)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
