"""Test support: real key files, a real users file, and the identity layer
composed around a tiny inner app that reports what it received."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth.csrf import CsrfProtect
from gateway.auth.keyring import KeyRing, new_session_key, new_token_key_line, parse_token_keys, write_private
from gateway.auth.ratelimit import LoginLimiter, MemoryCounterStore
from gateway.auth.routes import auth_routes
from gateway.auth.sessions import MemorySessionStore, SessionManager
from gateway.auth.tokens import TokenVerifier
from gateway.auth.users import UserDirectory
from gateway.context import get_context
from gateway.middleware.authentication import AuthenticationMiddleware
from gateway.middleware.request_context import RequestContextMiddleware
from gateway.middleware.session import SessionMiddleware
from gateway.settings import AuthSettings, OIDCSettings, ServerSettings, SessionSettings, Settings

ALICE_PASSWORD = "correct-horse-staple-1"
BOB_PASSWORD = "battery-purple-lamp-22"


class FakeClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.events.append({"action": action, "outcome": outcome, **fields})

    def of(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["action"] == action]


def make_users_template(path: Path) -> Path:
    """A users file with alice and bob (scrypt is slow on purpose: do it once)."""
    d = UserDirectory(path, warm=False)
    d.add("alice", ALICE_PASSWORD, groups=["employees", "security"], email="alice@example.com")
    d.add("bob", BOB_PASSWORD, groups=["employees"], email="bob@example.com")
    return path


@dataclass
class Env:
    dir: Path
    clock: FakeClock
    emit: Recorder
    settings: Settings
    session_keys: KeyRing
    token_keys: KeyRing
    users: UserDirectory
    sessions: SessionManager
    limiter: LoginLimiter
    csrf: CsrfProtect
    tokens: TokenVerifier
    extra: dict[str, Any] = field(default_factory=dict)

    def write_session_keys(self, *keys: str) -> None:
        write_private(self.settings.session.keys_file, "\n".join(keys) + "\n")

    def app(self, *, https: bool | None = None, upstream: Any = None, recheck_interval_s: float = 5.0) -> Any:
        inner = Starlette(
            routes=[
                *auth_routes(
                    sessions=self.sessions,
                    users=self.users,
                    limiter=self.limiter,
                    csrf=self.csrf,
                    emit=self.emit,
                    settings=self.settings,
                ),
                Route("/{path:path}", echo, methods=["GET", "POST"]),
                WebSocketRoute("/ws", ws_echo),
            ]
        )
        chain = AuthenticationMiddleware(
            inner, sessions=self.sessions, tokens=self.tokens, upstream=upstream, clock=self.clock, recheck_interval_s=recheck_interval_s
        )
        chain = SessionMiddleware(chain, sessions=self.sessions, https=https, recheck_interval_s=recheck_interval_s)
        return RequestContextMiddleware(chain)

    def client(self, *, ip: str = "10.0.0.1", https: bool = False, app: Any = None, **kw: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app or self.app(), client=(ip, 40000))
        base = "https://gw.test" if https else "http://gw.test"
        return httpx.AsyncClient(transport=transport, base_url=base, **kw)


def _headers(scope_headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope_headers]


async def echo(request: Request) -> JSONResponse:
    ctx = get_context(request.scope)
    ident = ctx.identity if ctx else None
    return JSONResponse(
        {
            "headers": _headers(request.scope["headers"]),
            "user": ident.user if ident else None,
            "auth_method": ident.auth_method if ident else None,
            "reason": ctx.extra.get("session_reason") if ctx else None,
        }
    )


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    ctx = get_context(websocket.scope)
    ident = ctx.identity if ctx else None
    await websocket.send_json({"headers": _headers(websocket.scope["headers"]), "user": ident.user if ident else None})
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text("echo:" + text)
    except WebSocketDisconnect:
        pass


def make_env(tmp_path: Path, users_template: Path, *, oidc: bool = False, max_failures: int = 5) -> Env:
    secrets_dir = tmp_path / "secrets"
    session_file = secrets_dir / "session.keys"
    token_file = secrets_dir / "token.keys"
    write_private(session_file, new_session_key() + "\n")
    write_private(token_file, new_token_key_line("k1") + "\n")
    users_file = tmp_path / "users.toml"
    shutil.copy(users_template, users_file)
    users_file.chmod(0o600)
    settings = Settings(
        config_path=tmp_path / "gateway.toml",
        base_dir=tmp_path,
        server=ServerSettings(public_url="http://gw.test", trusted_hosts=("gw.test",)),
        session=SessionSettings(keys_file=session_file, idle_timeout_s=1800, absolute_timeout_s=43200),
        auth=AuthSettings(
            users_file=users_file,
            token_key_file=token_file,
            login_max_failures=max_failures,
            login_window_s=900,
            oidc=OIDCSettings(issuer="https://idp.example", client_id="toolgate", display_name="Example SSO")
            if oidc
            else None,
        ),
    )
    clock = FakeClock()
    emit = Recorder()
    session_keys = KeyRing(session_file, emit=emit, check_interval_s=0)
    token_keys = KeyRing(token_file, name="token", parser=parse_token_keys, emit=emit, check_interval_s=0)
    users = UserDirectory(users_file, check_interval_s=0, clock=clock)
    sessions = SessionManager(settings.session, MemorySessionStore(), session_keys, users=users, emit=emit, clock=clock)
    limiter = LoginLimiter(MemoryCounterStore(), max_failures=max_failures, window_s=900, clock=clock)
    csrf = CsrfProtect(session_keys, clock=clock)
    tokens = TokenVerifier(token_keys, issuer="toolgate", audience="toolgate-api", max_ttl_s=settings.auth.token_max_ttl_s, users=users)
    return Env(tmp_path, clock, emit, settings, session_keys, token_keys, users, sessions, limiter, csrf, tokens)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf_token in page"
    return m.group(1)


async def login(client: httpx.AsyncClient, username: str, password: str, *, next_path: str = "/") -> httpx.Response:
    page = await client.get("/auth/login", params={"next": next_path})
    assert page.status_code == 200
    return await client.post(
        "/auth/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(page.text), "next": next_path},
    )


def write_config(env: Env) -> Path:
    """A real gateway.toml naming the env's key and users files (for load_settings)."""
    (env.dir / "policies").mkdir(exist_ok=True)
    write_private(env.dir / "secrets" / "audit.key", "x" * 64 + "\n")
    path = env.dir / "gateway.toml"
    path.write_text(
        '[session]\nkeys_file = "secrets/session.keys"\n'
        '[auth]\nusers_file = "users.toml"\ntoken_key_file = "secrets/token.keys"\n'
        '[policy]\ndir = "policies"\n'
        '[audit]\nkey_file = "secrets/audit.key"\npath = "audit/audit.jsonl"\n'
    )
    return path


def tamper(value: str, from_end: int = 10) -> str:
    """Change one character well inside the signature.

    Not the last one: the final base64 character of a 32-byte MAC carries
    two padding bits, so some edits there decode to the same bytes.
    """
    i = len(value) - from_end
    return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]


def header_values(body: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in body["headers"] if k == name]

