"""The fail-closed guard in isolation, and verifying/merging the audit chains of several replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.audit import AuditTrail
from gateway.audit.verify import chain_groups, read_events_merged, verify_paths
from gateway.middleware.request_context import RequestContextMiddleware
from gateway.settings import AuditSettings
from gateway.state import StateUnavailable
from gateway.state.guard import StateGuardMiddleware
from tests.helpers import write_secret


async def needs_state(request: Request) -> PlainTextResponse:
    raise StateUnavailable("ConnectionError: Error 111 connecting to 10.1.2.3:6379")


async def fine(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ws_needs_state(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    raise StateUnavailable("TimeoutError")


def client() -> TestClient:
    app = Starlette(
        routes=[Route("/page", needs_state), Route("/api/x", needs_state), Route("/fine", fine), WebSocketRoute("/ws", ws_needs_state)],
        middleware=[Middleware(RequestContextMiddleware), Middleware(StateGuardMiddleware, brand="Acme Tools")],
    )
    return TestClient(app, raise_server_exceptions=True)


def test_unavailable_state_is_a_branded_503_not_a_crash() -> None:
    with client() as c:
        page = c.get("/page", headers={"accept": "text/html"})
        assert page.status_code == 503 and page.headers["retry-after"] == "5"
        assert "Acme Tools" in page.text and page.headers["x-request-id"] in page.text
        assert "10.1.2.3" not in page.text and "ConnectionError" not in page.text
        api = c.get("/api/x")
        assert api.status_code == 503
        assert api.json()["error"]["code"] == "unavailable" and "10.1.2.3" not in api.text
        assert c.get("/fine").text == "ok"


def test_unavailable_state_closes_a_websocket_with_try_again_later() -> None:
    with client() as c, c.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
        assert exc.value.code == 1013


def write_chain(root: Path, key_file: Path, replica: str, n: int) -> None:
    settings = AuditSettings(path=root / replica / "audit.jsonl", key_file=key_file, flush_interval_s=0.01)
    trail = AuditTrail(settings, replica_id=replica)
    trail.start()
    for i in range(n):
        trail.emit("http.request", method="GET", path=f"/{replica}/{i}", status=200)
        time.sleep(0.002)
    assert trail.close()


def test_a_directory_of_replica_chains_is_verified_chain_by_chain_and_merged_by_time(tmp_path: Path) -> None:
    key_file = tmp_path / "audit.key"
    write_secret(key_file, "ab" * 32 + "\n")
    root = tmp_path / "audit"
    write_chain(root, key_file, "gw-a", 5)
    write_chain(root, key_file, "gw-b", 7)
    (root / ".viewer-cache").mkdir()
    (root / ".viewer-cache" / "junk.jsonl").write_text("not a trail\n")

    groups = chain_groups([root])
    assert [(label, [p.name for p in files]) for label, files in groups] == [("gw-a", ["audit.jsonl"]), ("gw-b", ["audit.jsonl"])]
    key = bytes.fromhex("ab" * 32)
    assert all(verify_paths(files, key).ok for _, files in groups)
    # As one series the two chains contradict each other: grouping is what makes this pass.
    assert not verify_paths([root / "gw-a" / "audit.jsonl", root / "gw-b" / "audit.jsonl"], key).ok

    merged = list(read_events_merged([root], actions=["http.request"]))
    assert len(merged) == 12
    stamps = [r["@timestamp"] for r in merged]
    assert stamps == sorted(stamps)
    assert {r["gateway"]["replica"] for r in merged} == {"gw-a", "gw-b"}
