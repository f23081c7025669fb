"""What a hostile client can do with raw bytes, against a real ``gateway run``.

Bounds on the request head and body (without them, uvicorn's httptools
protocol as shipped let one connection make the gateway hold a header of any
size in memory, and never closed a slow or silent connection), and the
request-smuggling and header-injection shapes a penetration tester sends.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings
from tests.helpers import GatewayProcess, free_port, make_config_dir, run_cli, submit_sign_in

pytestmark = pytest.mark.slow

TIMEOUT_S = 2


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    port = free_port()
    config = make_config_dir(
        tmp_path_factory.mktemp("head"), port=port, server_extra=f"header_timeout_s = {TIMEOUT_S}\nbody_timeout_s = {TIMEOUT_S}"
    )
    proc = GatewayProcess(config, port).start()
    try:
        yield proc
    finally:
        proc.stop()


def _connect(gw: GatewayProcess, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return s


def _read_response_head(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_response(s: socket.socket) -> bytes:
    """One whole response (head and a Content-Length body)."""
    data = _read_response_head(s)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:]) if k.strip().lower() == b"content-length"), 0)
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head


def _audited(gw: GatewayProcess, reason: str, timeout: float = 5) -> dict:
    """The trail's http.connection_refused record with this reason (waits for the writer)."""
    import json

    trail = gw.config.parent / "audit" / "audit.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in trail.read_text().splitlines() if trail.exists() else ():
            rec = json.loads(line)
            if rec["event"]["action"] == "http.connection_refused" and rec["event"].get("reason") == reason:
                return rec
        time.sleep(0.1)
    raise AssertionError(f"no http.connection_refused record with reason {reason}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_endless_header_is_refused_with_431_without_being_held(gw):
    before = _rss_kib(gw.proc.pid)
    s = _connect(gw)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
    sent = 0
    with pytest.raises(OSError):  # the gateway closes the connection while we are still sending
        for _ in range(256):  # up to 256 MiB
            s.sendall(b"a" * (1 << 20))
            sent += 1 << 20
    s.close()
    assert sent < 64 << 20
    # The high-water mark of the whole process moved by far less than what was sent.
    assert _rss_kib(gw.proc.pid) - before < 32 * 1024
    rec = _audited(gw, "head_too_large")
    assert rec["http"]["response"]["status_code"] == 431 and rec["client"]["ip"] == "127.0.0.1"
    assert rec["event"]["outcome"] == "failure" and rec["gateway"]["details"]["head_bytes"] > 64 * 1024


def test_the_refusal_is_a_431_with_the_connection_closed(gw):
    s = _connect(gw)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    head = _read_response_head(s)
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in head.lower()
    assert s.recv(10) == b""  # closed
    s.close()


def test_large_but_legitimate_heads_pass(gw):
    # 40 KiB of cookies and a long URL are under the default 64 KiB.
    s = _connect(gw)
    s.sendall(b"GET /healthz?" + b"q" * 4000 + b" HTTP/1.1\r\nHost: localhost\r\nCookie: a=" + b"c" * 40_000 + b"\r\n\r\n")
    assert _read_response_head(s).startswith(b"HTTP/1.1 200 ")
    s.close()


def test_a_slow_head_gets_408_after_the_timeout(gw):
    s = _connect(gw)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: loc")
    head = _read_response_head(s)
    elapsed = time.monotonic() - t0
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert TIMEOUT_S - 0.5 <= elapsed < TIMEOUT_S + 3
    assert s.recv(10) == b""
    s.close()
    assert _audited(gw, "head_timeout")["gateway"]["details"]["head_bytes"] > 0


def test_trickling_bytes_does_not_extend_the_deadline(gw):
    s = _connect(gw)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        for _ in range(TIMEOUT_S * 4):
            time.sleep(0.5)
            s.sendall(b"X-Slow: 1\r\n")
    except OSError:
        pass  # closed on us: that is the point
    head = _read_response_head(s)
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert time.monotonic() - t0 < TIMEOUT_S + 3
    s.close()


def test_a_silent_connection_is_closed(gw):
    s = _connect(gw)
    t0 = time.monotonic()
    assert _read_response_head(s).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - t0 < TIMEOUT_S + 3
    s.close()


def test_keep_alive_split_and_pipelined_heads_still_work(gw):
    s = _connect(gw)
    for _ in range(3):
        # A head split across reads, finished well inside the timeout.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        time.sleep(0.2)
        s.sendall(b"st: localhost\r\n\r\n")
        head = _read_response(s)
        assert head.startswith(b"HTTP/1.1 200 "), head
    # Two requests in one write.
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" * 2)
    time.sleep(0.5)
    data = s.recv(65536)
    assert data.count(b"HTTP/1.1 200 ") == 2, data
    # Idle between requests longer than the head timeout is the keep-alive's business, not a 408.
    s.close()


def _post_head(length: int) -> bytes:
    return (
        b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def test_a_stalled_body_is_cut_off_with_408(gw):
    s = _connect(gw)
    t0 = time.monotonic()
    s.sendall(_post_head(100) + b"username=a")
    head = _read_response_head(s)
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert TIMEOUT_S - 0.5 <= time.monotonic() - t0 < TIMEOUT_S + 3
    assert s.recv(10) == b""
    s.close()
    assert _audited(gw, "body_timeout")["http"]["response"]["status_code"] == 408
    # The request it belonged to is in the trail too, saying why it ended.
    import json

    trail = gw.config.parent / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        recs = [json.loads(x) for x in trail.read_text().splitlines()]
        cut = [r for r in recs if r["event"]["action"] == "http.request" and r["event"].get("reason") == "body_timeout"]
        if cut:
            assert cut[-1]["url"]["path"] == "/auth/login" and cut[-1]["http"]["request"]["method"] == "POST"
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the cut-off request is not in the audit trail")


def test_a_body_that_keeps_coming_is_not_cut_off(gw):
    # The bound is on silence between reads, not on the whole upload: a slow
    # link that keeps sending gets its answer (here the form's own 400/403).
    body = b"username=alice&password=x&csrf_token=nope"
    s = _connect(gw)
    t0 = time.monotonic()
    s.sendall(_post_head(len(body)))
    for i in range(0, len(body), 4):
        time.sleep(0.25)
        s.sendall(body[i : i + 4])
    assert time.monotonic() - t0 > TIMEOUT_S  # longer than the timeout in all
    head = _read_response_head(s)
    assert not head.startswith(b"HTTP/1.1 408 "), head
    assert head.startswith(b"HTTP/1.1 "), head
    s.close()


def test_an_upgraded_websocket_outlives_the_head_timeout(gw):
    # The head timer armed for the handshake must not fire into the websocket
    # the connection has become (it would write an HTTP 408 into the stream).
    import httpx
    from websockets.sync.client import connect

    password = "a-long-test-password-for-ws"
    add = run_cli("users", "add", "wsuser", "--groups", "employees", "--password-stdin", "--config", str(gw.config), stdin=password + "\n")
    assert add.returncode == 0, add.stderr
    deadline = time.monotonic() + 5
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        while True:  # the running gateway reads the users file within a second
            r = submit_sign_in(c, "wsuser", password)
            if r.status_code == 303 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 303, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    with connect(gw.url.replace("http://", "ws://") + "/_stcore/stream", additional_headers={"Cookie": cookie},
                 origin=gw.url, subprotocols=["streamlit"], open_timeout=10) as ws:  # fmt: skip
        time.sleep(TIMEOUT_S + 1.5)
        assert ws.ping().wait(5)  # still open, still answering


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    port = free_port()
    config = make_config_dir(tmp_path_factory.mktemp("small"), port=port, server_extra="max_header_bytes = 8192")
    proc = GatewayProcess(config, port).start()
    try:
        yield proc
    finally:
        proc.stop()


def _head_of(size: int) -> bytes:
    """A request head of exactly ``size`` bytes, blank line included."""
    start = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("split", [None, -1, -2, -3, 100])
def test_the_limit_is_exact_wherever_the_reads_split(small, split):
    # At the limit: served.  One byte over: refused.  However the head is cut
    # into reads, the blank line that ends it included.
    for size, status in ((8192, b"200"), (8193, b"431")):
        head = _head_of(size)
        s = _connect(small)
        if split is None:
            s.sendall(head)
        else:
            s.sendall(head[:split])
            time.sleep(0.2)
            s.sendall(head[split:])
        got = _read_response_head(s)
        assert got.startswith(b"HTTP/1.1 " + status), (size, split, got[:60])
        s.close()


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_header_bytes = 1024", "server.max_header_bytes"),
        ("header_timeout_s = 0", "server.header_timeout_s"),
        ("body_timeout_s = -1", "server.body_timeout_s"),
    ],
)
def test_limits_are_validated(tmp_path, line, key):
    config = make_config_dir(tmp_path, server_extra=line)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert key in str(err.value)


# Framing and header shapes that let a front proxy and the gateway disagree
# about where a request ends or whom it is for.  Each must be refused with
# 400 before any application code runs.
SMUGGLING = {
    "content-length and transfer-encoding": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different content-lengths": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "unknown transfer-coding": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "space before the colon": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "chunked twice": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative content-length": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
    "signed content-length": b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: +4\r\n\r\nabcd",
    "obsolete line folding": b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n",
    "NUL in a value": b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
    "bare CR in a value": b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
    "bare LF line ends": b"GET /auth/login HTTP/1.1\nHost: localhost\n\n",
    "no Host": b"GET /auth/login HTTP/1.1\r\n\r\n",
    "two Hosts, the bad one last": b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
    "two Hosts, the bad one first": b"GET /auth/login HTTP/1.1\r\nHost: evil.example\r\nHost: localhost\r\n\r\n",
    "two Hosts, both served": b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("raw", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_requests_are_refused(gw, raw):
    s = _connect(gw)
    s.sendall(raw)
    head = _read_response_head(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 400 "), head[:80]


def test_the_head_limit_holds_after_a_body_the_gateway_did_not_read(gw):
    # An anonymous API call is refused before its body is read; the body then
    # arrives anyway.  The next head on that connection must still be counted.
    s = _connect(gw)
    s.sendall(b"POST /api/whoami HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n")
    assert _read_response(s).startswith(b"HTTP/1.1 401 ")
    s.sendall(b"0123456789")
    time.sleep(0.2)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    head = _read_response_head(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 431 "), head[:80]
