"""The access log: rendered by the audit writer from the records it wrote, never holding the trail up."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from gateway.audit.access_log import (
    AccessLogSink,
    access_fields,
    chunks,
    render_lines,
    renderer,
)
from gateway.audit.sinks import build_sinks, close_sinks
from gateway.settings import AuditSettings, load_settings
from tests.helpers import make_config_dir

from .audit_helpers import BOTH_WRITERS, emit_requests, records_of


def _access(err: str) -> list[dict]:
    return [orjson.loads(line) for line in err.splitlines() if '"logger":"gateway.access"' in line]


@BOTH_WRITERS
def test_one_line_per_request_with_the_trail_s_values(make_trail, audit_dir: Path, capfd) -> None:
    # capfd, not capsys: the writer process writes to the inherited descriptor 2.
    t = make_trail(access_log=True)
    emit_requests(t, 3)
    t.emit("auth.login", user="alice", client_ip="10.0.0.7", auth_method="password", outcome="success")
    assert t.close()
    lines = _access(capfd.readouterr().err)
    recs = [r for r in records_of(audit_dir / "audit.jsonl") if r["event"]["action"] == "http.request"]
    assert len(recs) == 3
    assert [line["request_id"] for line in lines] == ["req-00000", "req-00001", "req-00002"]
    for line, rec in zip(lines, recs):
        assert line == {
            "event": "http.request", "level": "info", "logger": "gateway.access", "timestamp": rec["@timestamp"],
            "method": "GET", "path": "/sales", "status": 200, "bytes": 1234, "duration_ms": 2.5,
            "client_ip": "10.0.0.7", "user": "alice", "decision": "allow", "rule_id": "sales-employees",
            "request_id": rec["http"]["request"]["id"], "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        }  # fmt: skip


@BOTH_WRITERS
def test_switched_off_writes_nothing(make_trail, capfd) -> None:
    t = make_trail(access_log=False)
    emit_requests(t, 2)
    assert t.close()
    assert _access(capfd.readouterr().err) == []


def test_config_key_and_default(tmp_path: Path) -> None:
    assert AuditSettings().access_log is True
    on = load_settings(make_config_dir(tmp_path / "a"))
    off = load_settings(make_config_dir(tmp_path / "b", audit_extra="access_log = false"))
    assert (on.audit.access_log, off.audit.access_log) == (True, False)
    sinks = build_sinks(off.audit)
    assert not any(isinstance(s, AccessLogSink) for s in sinks)
    close_sinks(sinks)


def test_only_access_records_become_lines() -> None:
    assert access_fields({"event": {"action": "auth.login"}, "user": {"name": "a"}}) is None
    assert access_fields({"event": "http.request"}) is None
    ws = access_fields({
        "@timestamp": "2025-11-25T11:17:03.778455Z",
        "event": {"action": "websocket.session", "duration": 912345600000},
        "http": {"request": {"id": "r1"}, "response": {"status_code": 101, "body": {"bytes": 7}}},
        "url": {"path": "/_stcore/stream"}, "user": {"name": "alice"},
    })  # fmt: skip
    assert ws is not None
    assert (ws["event"], ws["status"], ws["duration_ms"], ws["path"]) == ("websocket.session", 101, 912345.6, "/_stcore/stream")
    assert "method" not in ws  # absent values are left out, not printed as null
    err = access_fields({"event": {"action": "http.request"}, "http": {"response": {"status_code": 503}}})
    assert err is not None and err["level"] == "error"


def test_hostile_trail_bytes_are_skipped_not_fatal() -> None:
    render = renderer(json=True)
    data = b'{"event":{"action":"http.request"}, broken\n"action":"http.request"\n[1,2]\n\xff\xfe"action":"http.request"\n'
    assert render_lines(data, render) == b""
    good = orjson.dumps({"event": {"action": "http.request"}, "url": {"path": "/x"}}) + b"\n"
    assert orjson.loads(render_lines(data + good, render))["path"] == "/x"


def test_console_format_on_a_terminal() -> None:
    line = renderer(json=False)(access_fields({
        "@timestamp": "2025-11-25T11:17:03.778455Z", "event": {"action": "http.request"},
        "http": {"request": {"method": "GET"}, "response": {"status_code": 200}}, "url": {"path": "/sales"},
    }) or {})  # fmt: skip
    text = line.decode()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.startswith("2025-11-25T11:17:03.778455Z") and "http.request" in text and "status=200" in text
    assert "path=/sales" in text and "[gateway.access]" in text


@pytest.mark.parametrize("size", [1, 40, 4096, 10_000])
def test_chunks_cut_at_line_ends(size: int) -> None:
    data = b"".join(b"x" * (i * 37 % 900) + b"\n" for i in range(200)) + b"y" * size + b"\n" + b"tail"
    parts = chunks(data)
    assert b"".join(parts) == data
    for p in parts[:-1]:
        assert p.endswith(b"\n")
        assert len(p) <= 4096 or p.count(b"\n") == 1  # only a single over-long line exceeds the bound


def test_a_blocked_stderr_drops_lines_instead_of_stalling_the_writer() -> None:
    r, w = os.pipe()
    try:
        sink = AccessLogSink(w, json=True, max_pending=64 * 1024)
        line = orjson.dumps({"event": {"action": "http.request"}, "url": {"path": "/p" * 200}}) + b"\n"
        batch = line * 100
        t0 = time.monotonic()
        for _ in range(200):  # far more than the pipe (64 KiB) plus the queue can hold
            sink.write(batch)
        assert time.monotonic() - t0 < 1.0, "write() must never wait for the output"
        assert sink.dropped_lines > 0
        # Once someone reads again, the queued lines come out whole.
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(_read_all(r)), daemon=True)
        reader.start()
        sink.close()
        os.close(w)
        w = -1
        reader.join(10)
        lines = bytes(got).splitlines()
        assert lines and all(orjson.loads(x)["path"] == "/p" * 200 for x in lines)
        assert len(lines) == sink.written_lines
        assert sink.written_lines + sink.dropped_lines == 200 * 100
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while chunk := os.read(fd, 65536):
        out += chunk
    return bytes(out)
