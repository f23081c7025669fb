"""``build_identity`` from a real configuration: what the app factory calls."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from gateway.auth import build_identity
from gateway.middleware.request_context import RequestContextMiddleware
from gateway.settings import load_settings

from ._support import ALICE_PASSWORD, Env, Recorder, echo, header_values, login, write_config


async def test_build_identity_wires_a_working_layer(env: Env) -> None:
    settings = load_settings(write_config(env), environ={})
    emit = Recorder()
    layer = build_identity(settings, emit=emit)
    app = Starlette(
        routes=[*layer.routes(), Route("/{path:path}", echo)],
        middleware=[Middleware(RequestContextMiddleware), *layer.middleware()],
    )
    transport = httpx.ASGITransport(app=app, client=("10.1.1.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
        assert (await login(c, "alice", ALICE_PASSWORD)).status_code == 303
        body = (await c.get("/tools", headers={"x-gateway-user": "mallory"})).json()
        assert header_values(body, "x-gateway-user") == ["alice"]
    assert [e["outcome"] for e in emit.of("auth.login")] == ["success"]
    assert emit.of("auth.login")[0]["client_ip"] == "10.1.1.1"
