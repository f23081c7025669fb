"""A real JWKS endpoint (uvicorn on a free loopback port) and signing keys."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class JWKSState:
    """What the JWKS server answers; tests change it between requests."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0
    hits: int = 0


def jwk_of(private_key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    algo = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    data = algo.to_jwk(private_key.public_key(), as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    if alg:
        data["alg"] = alg
    return data


def _app(state: JWKSState) -> Starlette:
    async def jwks(request: Request) -> Response:
        state.hits += 1
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.status != 200:
            return Response("unavailable", status_code=state.status)
        return JSONResponse({"keys": state.keys})

    return Starlette(routes=[Route("/certs", jwks)])


@dataclass
class Served:
    url: str
    state: JWKSState


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[Served]:
    state = JWKSState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("JWKS test server did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}/certs", state)
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@pytest.fixture(scope="session")
def make_jwk() -> Any:
    return jwk_of


@dataclass(frozen=True)
class Keys:
    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    other_ec: ec.EllipticCurvePrivateKey  # never published


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        ec=ec.generate_private_key(ec.SECP256R1()),
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        other_ec=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture
def published(jwks_server: Served, keys: Keys) -> Served:
    """The server publishes the EC key (with alg) and the RSA key (without alg)."""
    jwks_server.state.keys = [jwk_of(keys.ec, "ec-1", "ES256"), jwk_of(keys.rsa, "rsa-1", None)]
    jwks_server.state.status = 200
    jwks_server.state.delay_s = 0.0
    jwks_server.state.hits = 0
    return jwks_server
