"""AuditMiddleware over a real Starlette app: one event per request / websocket session, 503 when the trail is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from structlog.testing import capture_logs

from gateway.audit import AuditTrail, verify_paths
from gateway.context import Identity, get_context
from gateway.middleware.audit import AuditMiddleware
from gateway.middleware.request_context import RequestContextMiddleware

from .audit_helpers import BOTH_WRITERS, records_of, wait_for

ALICE = Identity(user="alice", email="alice@example.com", groups=frozenset({"sales", "employees"}), auth_method="session", session_id="sid-42")


class StandInAuth:
    """Stands in for the session/authn/authz layers (other teams' code): fills the context like they do."""

    def __init__(self, app: Any, *, identity: Identity | None = ALICE) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = get_context(scope)
        if ctx is not None:
            ctx.path = scope["path"].lower()
            ctx.tool = "sales" if ctx.path.startswith("/sales") else None
            ctx.identity = self.identity
            ctx.policy_version = "v7"
            if ctx.path == "/denied":
                ctx.decision, ctx.rule_id, ctx.deny_reason = "deny", "default-deny", "no rule allows alice"
                await PlainTextResponse("no", status_code=403)(scope, receive, send)
                return
            ctx.decision, ctx.rule_id = "allow", "sales-employees"
        await self.app(scope, receive, send)


calls: list[str] = []


async def hello(request: Request) -> Response:
    calls.append("hello")
    return PlainTextResponse("hello world")


async def stream(request: Request) -> Response:
    async def gen():
        for _ in range(3):
            yield b"x" * 1000

    return StreamingResponse(gen())


async def upload(request: Request) -> Response:
    await request.body()
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    raise RuntimeError("kaboom")


async def close_trail(request: Request) -> Response:
    request.app.state.trail.close()  # the trail dies while this request is in flight
    return PlainTextResponse("served")


async def ws_echo(websocket: WebSocket) -> None:
    calls.append("ws")
    await websocket.accept()
    async for msg in websocket.iter_text():
        await websocket.send_text(msg.upper())


async def ws_server_close(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("bye")
    await websocket.close(code=4001)


def build(trail: AuditTrail, **audit_kw: Any) -> Starlette:
    app = Starlette(
        routes=[
            Route("/sales/hello", hello),
            Route("/stream", stream),
            Route("/upload", upload, methods=["POST"]),
            Route("/boom", boom),
            Route("/denied", hello),
            Route("/close-trail", close_trail),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/ws-close", ws_server_close),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(AuditMiddleware, trail=trail, **audit_kw),
            Middleware(StandInAuth),
        ],
    )
    app.state.trail = trail
    return app


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver")


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def only_record(audit_dir: Path) -> dict[str, Any]:
    (rec,) = records_of(audit_dir / "audit.jsonl")
    return rec


@BOTH_WRITERS
async def test_http_request_event_carries_context_identity_and_response(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail(replica_id="gw-1")
    async with client(build(t)) as c:
        r = await c.get("/sales/hello", headers={"user-agent": "pytest-ua/1.0"})
    assert r.status_code == 200 and r.text == "hello world"
    assert t.close()
    rec = only_record(audit_dir)
    assert rec["event"]["action"] == "http.request" and rec["event"]["outcome"] == "success"
    assert rec["event"]["duration"] > 0
    assert rec["http"] == {"request": {"id": r.headers["x-request-id"], "method": "GET"}, "response": {"status_code": 200, "body": {"bytes": 11}}}
    assert rec["client"] == {"ip": "127.0.0.1"}
    assert rec["user"] == {"name": "alice", "email": "alice@example.com", "roles": ["employees", "sales"]}
    assert rec["url"] == {"path": "/sales/hello"}
    assert rec["user_agent"] == {"original": "pytest-ua/1.0"}
    assert rec["gateway"] == {
        "decision": "allow",
        "rule_id": "sales-employees",
        "policy_version": "v7",
        "tool": "sales",
        "auth_method": "session",
        "session_id": "sid-42",
        "replica": "gw-1",
    }
    assert verify_paths([audit_dir], key).ok


async def test_streamed_body_bytes_are_counted(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    async with client(build(t)) as c:
        r = await c.get("/stream")
    assert len(r.content) == 3000
    t.close()
    assert only_record(audit_dir)["http"]["response"]["body"]["bytes"] == 3000


async def test_bodies_are_never_recorded(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    async with client(build(t)) as c:
        r = await c.post("/upload", content=b"username=bob&password=hunter2&card=4111111111111111")
    assert r.status_code == 200
    t.close()
    raw = (audit_dir / "audit.jsonl").read_bytes()
    assert b"hunter2" not in raw and b"4111111111111111" not in raw
    assert only_record(audit_dir)["http"]["request"]["method"] == "POST"


async def test_denied_request_records_decision_and_reason(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    async with client(build(t)) as c:
        r = await c.get("/denied")
    assert r.status_code == 403
    t.close()
    rec = only_record(audit_dir)
    assert rec["event"]["outcome"] == "failure" and rec["event"]["reason"] == "no rule allows alice"
    assert rec["gateway"]["decision"] == "deny" and rec["gateway"]["rule_id"] == "default-deny"


async def test_crash_is_recorded_as_500(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    async with client(build(t)) as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    t.close()
    rec = only_record(audit_dir)
    assert rec["http"]["response"]["status_code"] == 500 and rec["event"]["outcome"] == "failure"


@BOTH_WRITERS
async def test_unhealthy_trail_fails_closed_with_503_before_the_app_runs(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    t.close()
    async with client(build(t)) as c:
        r = await c.get("/sales/hello", headers={"accept": "application/json"})
    assert r.status_code == 503
    assert r.json()["error"] == "service_unavailable"
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert r.headers["retry-after"] == "5"
    assert calls == []  # nothing served unrecorded


@BOTH_WRITERS
async def test_real_write_failure_turns_requests_into_503(make_trail, audit_dir: Path) -> None:
    t = make_trail(flush_interval_s=0.01)
    app = build(t)
    async with client(app) as c:
        assert (await c.get("/sales/hello")).status_code == 200
        assert wait_for(lambda: t.written == 1)
        audit_dir.rename(audit_dir.with_name("gone"))
        audit_dir.write_text("a file now")  # the folder is gone: nothing can be written
        assert wait_for(lambda: not t.healthy)
        assert (await c.get("/sales/hello")).status_code == 503
    assert calls == ["hello"]
    t.close(timeout=0.2)


async def test_fail_open_keeps_serving(make_trail) -> None:
    t = make_trail(fail_closed=False)
    t.close()
    async with client(build(t)) as c:
        r = await c.get("/sales/hello")
    assert r.status_code == 200
    assert t.dropped == 1


async def test_branded_unavailable_response_is_used(make_trail) -> None:
    t = make_trail()
    t.close()
    app = build(t, unavailable_response=lambda scope: PlainTextResponse("branded outage page", status_code=503))
    async with client(app) as c:
        r = await c.get("/sales/hello")
    assert (r.status_code, r.text) == (503, "branded outage page")


async def test_trail_failing_after_the_response_is_logged_loudly(make_trail) -> None:
    t = make_trail()
    with capture_logs() as logs:
        async with client(build(t)) as c:
            r = await c.get("/close-trail")
    assert r.status_code == 200 and r.text == "served"
    lost = [e for e in logs if e["event"] == "audit_event_lost"]
    assert lost and lost[0]["log_level"] == "error" and lost[0]["status"] == 200
    assert lost[0]["request_id"] == r.headers["x-request-id"]


async def test_without_a_request_context_the_basics_are_still_recorded(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    app = Starlette(routes=[Route("/sales/hello", hello)], middleware=[Middleware(AuditMiddleware, trail=t)])
    async with client(app) as c:
        await c.get("/sales/hello")
    t.close()
    rec = only_record(audit_dir)
    assert rec["url"]["path"] == "/sales/hello" and rec["http"]["response"]["status_code"] == 200
    assert rec["client"]["ip"] == "127.0.0.1"


@BOTH_WRITERS
def test_websocket_session_event(make_trail, audit_dir: Path, key: bytes) -> None:
    t = make_trail()
    with TestClient(build(t)) as tc, tc.websocket_connect("/ws") as ws:
        ws.send_text("a")
        assert ws.receive_text() == "A"
        ws.send_text("bc")
        assert ws.receive_text() == "BC"
        ws.close(1000)
    assert wait_for(lambda: t.written == 1)
    t.close()
    rec = only_record(audit_dir)
    assert rec["event"]["action"] == "websocket.session" and rec["event"]["outcome"] == "success"
    assert rec["http"]["response"]["status_code"] == 101
    assert rec["http"]["response"]["body"]["bytes"] == 3
    assert rec["user"]["name"] == "alice" and rec["url"]["path"] == "/ws"
    assert rec["gateway"]["details"] == {
        "close_code": 1000,
        "closed_by": "client",
        "accepted": True,
        "messages_in": 2,
        "messages_out": 2,
        "bytes_in": 3,
    }
    assert rec["event"]["duration"] > 0
    assert verify_paths([audit_dir], key).ok


def test_websocket_server_close_code(make_trail, audit_dir: Path) -> None:
    t = make_trail()
    with TestClient(build(t)) as tc, tc.websocket_connect("/ws-close") as ws:
        assert ws.receive_text() == "bye"
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_text()
        assert e.value.code == 4001
    assert wait_for(lambda: t.written == 1)
    t.close()
    d = only_record(audit_dir)["gateway"]["details"]
    assert (d["close_code"], d["closed_by"], d["messages_out"]) == (4001, "server", 1)


def test_websocket_refused_with_1013_when_trail_is_down(make_trail) -> None:
    t = make_trail()
    t.close()
    with TestClient(build(t)) as tc:
        with pytest.raises(WebSocketDisconnect) as e:
            with tc.websocket_connect("/ws"):
                pass
    assert e.value.code == 1013
    assert calls == []


def test_lifespan_passes_through(make_trail) -> None:
    t = make_trail()
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            msg = await receive()
            events.append(msg["type"])
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    with TestClient(AuditMiddleware(app, trail=t)):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert t.written == 0


def test_constructor_rejects_a_non_trail() -> None:
    with pytest.raises(TypeError):
        AuditMiddleware(lambda s, r, se: None, trail=object())  # type: ignore[arg-type]
