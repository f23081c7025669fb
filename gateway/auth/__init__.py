"""Identity: sessions, local users, API tokens, sign-in pages (and OIDC/upstream).

The pieces are small and wired together in one place, :func:`build_identity`,
so the app factory needs one call.  Imports happen inside the function: the
middleware modules import ``gateway.auth.sessions``, which runs this file
first, and an eager import here would be circular.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from starlette.middleware import Middleware
    from starlette.routing import BaseRoute

    from gateway.auth.csrf import CsrfProtect
    from gateway.auth.keyring import KeyRing
    from gateway.auth.ratelimit import LoginLimiter
    from gateway.auth.sessions import SessionManager
    from gateway.auth.tokens import TokenVerifier
    from gateway.auth.users import UserDirectory
    from gateway.settings import Settings

Emit = Callable[..., None]


def _no_emit(action: str, *, outcome: str | None = None, **fields: Any) -> None:
    return None


@dataclass
class IdentityLayer:
    """Everything the identity layer runs, built once from settings."""

    settings: "Settings"
    emit: Emit
    session_keys: "KeyRing"
    token_keys: "KeyRing"
    users: "UserDirectory"
    sessions: "SessionManager"
    tokens: "TokenVerifier"
    limiter: "LoginLimiter"
    csrf: "CsrfProtect"
    upstream: Any = None
    state: Any = None  # gateway.state backend: where sessions and counters live

    def middleware(self) -> list["Middleware"]:
        """Session then authentication, in that order (authorization goes after)."""
        from starlette.middleware import Middleware

        from gateway.middleware.authentication import AuthenticationMiddleware
        from gateway.middleware.session import SessionMiddleware

        return [
            # Shared-state outage -> branded 503 instead of a crash (Redis backend only).
            *(self.state.middleware() if self.state is not None else []),
            Middleware(SessionMiddleware, sessions=self.sessions),
            Middleware(
                AuthenticationMiddleware,
                sessions=self.sessions,
                tokens=self.tokens,
                upstream=self.upstream,
            ),
        ]

    def routes(self) -> list["BaseRoute"]:
        from gateway.auth.routes import auth_routes

        return auth_routes(
            sessions=self.sessions,
            users=self.users,
            limiter=self.limiter,
            csrf=self.csrf,
            emit=self.emit,
            settings=self.settings,
        )


def build_identity(
    settings: "Settings", *, emit: Emit | None = None, upstream: Any = None, state: Any = None
) -> IdentityLayer:
    """Build the identity layer from validated settings.

    ``upstream`` is the optional identity-aware-proxy verifier (an object with
    ``.header`` and ``async verify(token) -> Identity``).  ``state``: the
    backend from ``gateway.state.build_state`` (its ``.sessions`` and
    ``.counters`` stores); None keeps both in this process.
    """
    from gateway.auth.csrf import CsrfProtect
    from gateway.auth.keyring import KeyRing, parse_session_keys, parse_token_keys
    from gateway.auth.ratelimit import LoginLimiter, MemoryCounterStore
    from gateway.auth.sessions import MemorySessionStore, SessionManager
    from gateway.auth.tokens import TokenVerifier
    from gateway.auth.users import UserDirectory

    emit = emit or _no_emit
    session_keys = KeyRing(settings.session.keys_file, name="session", parser=parse_session_keys, emit=emit)
    token_keys = KeyRing(settings.auth.token_key_file, name="token", parser=parse_token_keys, emit=emit)
    users = UserDirectory(settings.auth.users_file)
    store = state.sessions if state is not None else MemorySessionStore()
    sessions = SessionManager(settings.session, store, session_keys, users=users, emit=emit)
    tokens = TokenVerifier(
        token_keys,
        issuer=settings.auth.token_issuer,
        audience=settings.auth.token_audience,
        max_ttl_s=settings.auth.token_max_ttl_s,
        users=users,
    )
    limiter = LoginLimiter(
        state.counters if state is not None else MemoryCounterStore(),
        max_failures=settings.auth.login_max_failures,
        window_s=settings.auth.login_window_s,
    )
    csrf = CsrfProtect(session_keys)
    return IdentityLayer(
        settings=settings,
        emit=emit,
        session_keys=session_keys,
        token_keys=token_keys,
        users=users,
        sessions=sessions,
        tokens=tokens,
        limiter=limiter,
        csrf=csrf,
        upstream=upstream,
        state=state,
    )
