"""A real gateway (``gateway run``: uvicorn, full chain, real Streamlit) with the platform
features on, a real local SMTP server (aiosmtpd) and a local webhook receiver for alerts."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from gateway.auth.keyring import KeyRing, parse_token_keys
from gateway.auth.tokens import mint_token
from gateway.settings import load_settings
from tests.app.conftest import SignInClient, add_users
from tests.helpers import GatewayProcess, free_port, make_config_dir, write_secret

WEBHOOK_SECRET = "test-webhook-secret-2f9c"


# ---------------------------------------------------------------- alert receivers


@dataclass
class Mailbox:
    """What the local SMTP server received."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if predicate(m):
                        return m
            time.sleep(0.05)
        raise AssertionError(f"no matching e-mail within {timeout} s; got {[m['subject'] for m in self.messages]}")


@dataclass
class Hooks:
    """What the local webhook receiver received."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for c in self.calls:
                    if predicate(c):
                        return c
            time.sleep(0.05)
        raise AssertionError(f"no matching webhook call within {timeout} s; got {[c['json'].get('summary') for c in self.calls]}")


@pytest.fixture(scope="session")
def mailbox():
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            msg = message_from_bytes(envelope.content, policy=policy.default)
            with box.lock:
                box.messages.append({
                    "from": envelope.mail_from, "to": list(envelope.rcpt_tos), "subject": str(msg["subject"]),
                    "body": msg.get_body(("plain",)).get_content(), "headers": dict(msg.items()),
                })  # fmt: skip
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def hooks():
    received = Hooks()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with received.lock:
                received.calls.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body, "json": json.loads(body)})  # fmt: skip
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hook"  # type: ignore[attr-defined]
    try:
        yield received
    finally:
        server.shutdown()


# ---------------------------------------------------------------- the gateway


@dataclass
class PlatformGateway(SignInClient):
    url: str
    config: Path
    process: GatewayProcess
    token_keys: KeyRing
    settings: Any

    def token(self, sub: str, groups: list[str], ttl: int = 900, email: str = "") -> str:
        s = self.settings.auth
        return mint_token(self.token_keys, subject=sub, groups=groups, ttl_s=ttl, issuer=s.token_issuer,
                          audience=s.token_audience, max_ttl_s=s.token_max_ttl_s, email=email)[0]  # fmt: skip

    def bearer(self, sub: str, groups: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, groups)}"}

    @property
    def audit_path(self) -> Path:
        return self.settings.audit.path

    def audit_events(self, action: str | None = None) -> list[dict[str, Any]]:
        path = self.audit_path
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if action is None or rec.get("event", {}).get("action") == action:
                out.append(rec)
        return out

    def wait_audit(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.audit_events():
                if predicate(rec):
                    return rec
            time.sleep(0.1)
        raise AssertionError("no matching audit record")


def start_platform_gateway(
    target: Path, *, platform: str = "", alerts: str = "", server_extra: str = "", env: dict[str, str] | None = None
) -> PlatformGateway:
    port = free_port()
    write_secret(target / "secrets" / "webhook.key", WEBHOOK_SECRET + "\n")
    config = make_config_dir(
        target, port=port, server_extra=server_extra,
        sections_extra=f"[platform]\n{platform}\n\n[alerts]\n{alerts}\n",
    )  # fmt: skip
    add_users(config)
    settings = load_settings(config)
    ring = KeyRing(settings.auth.token_key_file, name="token", parser=parse_token_keys)
    proc = GatewayProcess(config, port, env=env).start()
    return PlatformGateway(url=proc.url, config=config, process=proc, token_keys=ring, settings=settings)


@pytest.fixture(scope="session")
def platform_gw(tmp_path_factory, mailbox, hooks):
    gw = start_platform_gateway(
        tmp_path_factory.mktemp("platform"),
        platform="session_sweep_interval_s = 1\nintegrity_check_interval_s = 0",
        alerts=(
            f'smtp_host = "127.0.0.1"\nsmtp_port = {mailbox.port}\nemail_to = ["security@example.com"]\n'
            f'email_from = "toolgate@example.com"\nwebhook_url = "{hooks.url}"\nwebhook_secret_file = "secrets/webhook.key"\n'
            "signin_failures = 3\ndenied_burst = 5\nwindow_s = 60\ncooldown_s = 600\n"
        ),
    )  # fmt: skip
    try:
        yield gw
    finally:
        gw.process.stop()


def mcp_initialize(platform_gw: "PlatformGateway", token: str) -> str:
    """Open a stateful (handshake-era) MCP session by hand; its Mcp-Session-Id."""
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    r = httpx.post(
        platform_gw.url + "/mcp",
        headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream",
                 "mcp-protocol-version": LATEST_HANDSHAKE_VERSION},  # fmt: skip
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        timeout=20,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]
