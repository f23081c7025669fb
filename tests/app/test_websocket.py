"""Streamlit's websocket is authorized like the page, for every handshake and message."""

from __future__ import annotations

import re
import time

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.app.conftest import Gateway


def ws_url(gateway: Gateway) -> str:
    return gateway.url.replace("http://", "ws://") + "/_stcore/stream"


def cookie_header(client) -> str:
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def open_stream(gateway: Gateway, cookie: str | None, origin: str | None = None):
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    return connect(
        ws_url(gateway),
        additional_headers=headers,
        origin=origin or gateway.url,
        subprotocols=["streamlit"],
        open_timeout=10,
    )


def run_page(ws, page_name: str, timeout: float = 20) -> str:
    """Ask for a page the way the frontend does and collect what the server renders."""
    msg = BackMsg()
    msg.rerun_script.page_name = page_name
    msg.rerun_script.query_string = ""
    ws.send(msg.SerializeToString())
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        fwd = ForwardMsg()
        fwd.ParseFromString(raw)
        seen.append(str(fwd))
        if fwd.WhichOneof("type") == "script_finished":
            break
    return "\n".join(seen)


def test_anonymous_handshake_is_refused(gateway: Gateway):
    with pytest.raises(InvalidStatus) as err:
        open_stream(gateway, None)
    assert err.value.response.status_code == 403


def test_forged_identity_header_does_not_open_the_socket(gateway: Gateway):
    with pytest.raises(InvalidStatus):
        connect(ws_url(gateway), additional_headers={"X-Gateway-User": "sam", "X-Gateway-Groups": "security"},
                origin=gateway.url, open_timeout=10)


def test_cross_origin_handshake_is_refused(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        with pytest.raises(InvalidStatus):
            open_stream(gateway, cookie_header(c), origin="https://evil.example")


def test_signed_in_page_runs_over_the_socket(gateway: Gateway):
    with gateway.signed_in("alice") as c, open_stream(gateway, cookie_header(c)) as ws:
        text = run_page(ws, "sales")
    assert "Sales" in text
    assert "Access not granted" not in text


def test_page_switch_to_forbidden_page_gets_the_not_allowed_view(gateway: Gateway):
    with gateway.signed_in("alice") as c, open_stream(gateway, cookie_header(c)) as ws:
        text = run_page(ws, "audit")
    assert "Access not granted" in text
    assert "Placeholder" not in text and "Integrity" not in text  # nothing of the audit page ran


def test_allowed_group_can_switch_to_the_page(gateway: Gateway):
    with gateway.signed_in("sam") as c, open_stream(gateway, cookie_header(c)) as ws:
        text = run_page(ws, "audit")
    assert "Access not granted" not in text
    assert "Audit" in text


def test_signed_out_cookie_cannot_open_the_socket(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        cookie = cookie_header(c)
        form = c.get("/auth/logout")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        assert c.post("/auth/logout", data={"csrf_token": token}).status_code == 303
    with pytest.raises(InvalidStatus):
        open_stream(gateway, cookie)


def test_open_socket_is_closed_after_sign_out(gateway: Gateway):
    with gateway.signed_in("alice") as c:
        cookie = cookie_header(c)
        with open_stream(gateway, cookie) as ws:
            run_page(ws, "")
            form = c.get("/auth/logout")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            assert c.post("/auth/logout", data={"csrf_token": token}).status_code == 303
            deadline = time.monotonic() + 15
            closed = None
            while time.monotonic() < deadline:
                try:
                    beat = BackMsg()
                    beat.app_heartbeat = True
                    ws.send(beat.SerializeToString())
                    ws.recv(timeout=1)
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    closed = exc
                    break
            assert closed is not None, "the socket outlived its session"
            assert closed.rcvd is not None and closed.rcvd.code in (4401, 1008)
