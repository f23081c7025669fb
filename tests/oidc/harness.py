"""Helpers for the OIDC tests (the fixtures live in conftest.py).

* :func:`start_provider`: a real OpenID provider (the npm package
  ``oidc-provider``, see provider.mjs) started with ``node`` on a free
  loopback port.  Skips only where ``node`` is not installed; missing
  ``node_modules`` is an error that says how to fix it.
* :class:`FakeIdP`: discovery and a JWKS we control, served by a tiny
  Starlette app on a real uvicorn port, for ID-token checks with our own keys.
* :class:`Browser`: one client for the gateway (httpx ASGITransport over a
  Starlette app composed from the OIDC routes) and one for the provider, plus
  the steps of a sign-in.
* :class:`AuditRecorder`: an ``emit`` that keeps events.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
GATEWAY_URL = "http://127.0.0.1:8501"  # the public_url of the gateway under test
REDIRECT_URI = GATEWAY_URL + "/auth/callback"


# ---------------------------------------------------------------- the real provider


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen[bytes]
    log_path: Path


def start_provider(tmp: Path, *, conform: bool) -> Provider:
    node = shutil.which("node")
    if node is None:
        pytest.skip("`node` is not installed: the OIDC end-to-end tests need a real OpenID provider (oidc-provider)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 20:
        pytest.fail(f"node {version} is too old for oidc-provider 9: install Node.js 20 or later", pytrace=False)
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("tests/oidc/node_modules is missing: run `cd tests/oidc && npm ci`", pytrace=False)
    log_path = tmp / ("provider-conform.log" if conform else "provider.log")
    env = {
        **os.environ,
        "REDIRECT_URIS": REDIRECT_URI,
        "CONFORM_ID_TOKEN": "1" if conform else "0",
        "NODE_ENV": "test",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [node, "provider.mjs"],
            cwd=HERE,
            env=env,
            stdin=subprocess.PIPE,  # the provider exits when this closes, even if pytest dies
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(15)
    if not line or not line[0].strip():
        _kill(proc)
        raise RuntimeError(f"oidc-provider did not start: {log_path.read_text(errors='replace')[-2000:]}")
    issuer = json.loads(line[0])["issuer"]
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(issuer + "/.well-known/openid-configuration", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            _kill(proc)
            raise RuntimeError(f"oidc-provider discovery never answered: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return Provider(issuer, proc, log_path)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_provider(provider: Provider) -> None:
    _kill(provider.process)


# ---------------------------------------------------------------- a server we control


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def jwk_of(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    algo = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    data = algo.to_jwk(private_key.public_key(), as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    if alg:
        data["alg"] = alg
    return data


@dataclass
class FakeIdP:
    """Discovery + JWKS on a real port; ``issuer`` is what discovery claims."""

    url: str = ""
    issuer: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": self.url + "/auth",
                    "token_endpoint": self.url + "/token",
                    "jwks_uri": self.url + "/jwks",
                    "code_challenge_methods_supported": ["S256"],
                    **self.extra,
                }
            )

        async def jwks(request: Request) -> Response:
            return JSONResponse({"keys": self.keys})

        return Starlette(
            routes=[Route("/.well-known/openid-configuration", discovery), Route("/jwks", jwks)]
        )


@dataclass(frozen=True)
class IdPKeys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey  # never published


# ---------------------------------------------------------------- gateway side


class AuditRecorder:
    """An ``emit`` that keeps the events (the contract: action, outcome, flat fields)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        self.events.append({"action": action, "outcome": outcome, **fields})

    def logins(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["action"] == "auth.login"]


class Browser:
    """One user agent: a client for the gateway (ASGI) and one for the provider (HTTP)."""

    def __init__(self, app: Any, *, base_url: str = GATEWAY_URL) -> None:
        self.gw = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url, headers={"accept": "text/html"}
        )
        self.idp = httpx.AsyncClient(timeout=10)

    async def aclose(self) -> None:
        await self.gw.aclose()
        await self.idp.aclose()

    async def start(self, next_path: str | None = "/") -> httpx.Response:
        params = {} if next_path is None else {"next": next_path}
        return await self.gw.get("/auth/oidc/start", params=params)

    async def authorize(self, url: str, *, login: str = "alice", abort: bool = False) -> str:
        """Follow the provider's pages (devInteractions login, consent) to the callback URL."""
        for _ in range(12):
            if url.startswith(GATEWAY_URL) or url.startswith(GATEWAY_URL.replace("http:", "https:")):
                return url
            resp = await self.idp.get(url)
            if resp.status_code in (302, 303):
                url = str(resp.url.join(resp.headers["location"]))
                continue
            assert resp.status_code == 200, resp.text[:500]
            if abort:
                resp = await self.idp.get(str(resp.url).rstrip("/") + "/abort")
                url = str(resp.url.join(resp.headers["location"]))
                continue
            action = re.search(r'<form[^>]*action="([^"]+)"', resp.text)
            prompt = re.search(r'name="prompt" value="([^"]+)"', resp.text)
            assert action and prompt, resp.text[:500]
            data = {"prompt": prompt.group(1)}
            if data["prompt"] == "login":
                data.update(login=login, password="irrelevant")
            resp = await self.idp.post(str(resp.url.join(action.group(1))), data=data)
            assert resp.status_code in (302, 303), resp.text[:500]
            url = str(resp.url.join(resp.headers["location"]))
        raise AssertionError("the provider never redirected back to the gateway")

    async def callback(self, url: str) -> httpx.Response:
        parts = urlsplit(url)
        return await self.gw.get(parts.path + ("?" + parts.query if parts.query else ""))

    async def sign_in(self, *, next_path: str | None = "/", login: str = "alice") -> tuple[str, httpx.Response]:
        start = await self.start(next_path)
        assert start.status_code == 302, start.text[:500]
        callback_url = await self.authorize(start.headers["location"], login=login)
        return callback_url, await self.callback(callback_url)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}

