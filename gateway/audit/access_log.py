"""The access log: one line per request on stderr, rendered from the audit trail.

Operators expect a server to say what it served, as uvicorn's access log or
oauth2-proxy's request log do.  The gateway turns uvicorn's access log off:
it would print paths and query strings unredacted, and it costs the request
path ~10 µs.  Instead, this sink of the audit writer renders every written
``http.request`` and ``websocket.session`` record as a short line through
structlog's renderers: JSON when stderr is not a terminal, the console format
when it is.  That is the same shape as every other line the gateway logs
(gateway/logging.py), under the logger name ``gateway.access``.

Three properties follow from where it sits:

* it shows exactly what the trail recorded, redaction included (a token in
  a query string never reaches the console, because it never reached the
  trail);
* it is off the request path: the writer runs in its own process by default;
* it never holds the trail up.  ``write`` only queues the written bytes;
  a thread of its own parses, renders and writes them.  When stderr blocks
  (a pipe nobody reads), the queue fills and further lines are dropped and
  counted, rather than stalling the audit trail behind a log reader.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Callable

import orjson
import structlog

log = structlog.get_logger("gateway.access")

LOGGER_NAME = "gateway.access"
ACTIONS = (b'"action":"http.request"', b'"action":"websocket.session"')
# Written bytes waiting for the output thread; past this, whole batches are
# dropped (and counted) instead of queued.
MAX_PENDING_BYTES = 4 * 1024 * 1024
# One os.write per chunk of at most this many bytes, cut at line ends: writes
# of up to PIPE_BUF bytes to a pipe are atomic, so the gateway's own log lines
# (another process, the same pipe) never land inside one of ours.
CHUNK_BYTES = 4096


def access_fields(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The access-log line's fields for one trail record, or None for records that are not accesses."""
    event = rec.get("event")
    if not isinstance(event, dict) or event.get("action") not in ("http.request", "websocket.session"):
        return None
    http = _dict(rec.get("http"))
    req = _dict(http.get("request"))
    resp = _dict(http.get("response"))
    status = resp.get("status_code")
    duration = event.get("duration")
    gw = _dict(rec.get("gateway"))
    out: dict[str, Any] = {
        "event": event["action"],
        "level": "error" if isinstance(status, int) and status >= 500 else "info",
        "logger": LOGGER_NAME,
        "timestamp": rec.get("@timestamp"),
        "method": req.get("method"),
        "path": _dict(rec.get("url")).get("path"),
        "status": status,
        "bytes": _dict(resp.get("body")).get("bytes"),
        "duration_ms": round(duration / 1e6, 3) if isinstance(duration, (int, float)) else None,
        "client_ip": _dict(rec.get("client")).get("ip"),
        "user": _dict(rec.get("user")).get("name"),
        "decision": gw.get("decision"),
        "rule_id": gw.get("rule_id"),
        "request_id": req.get("id"),
        "user_agent": _dict(rec.get("user_agent")).get("original"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def renderer(json: bool) -> Callable[[dict[str, Any]], bytes]:
    """structlog's JSON or console renderer, as the gateway's own logging uses them, returning one line."""
    if json:
        r = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    else:
        r = structlog.dev.ConsoleRenderer(colors=False)

    def render(fields: dict[str, Any]) -> bytes:
        out = r(None, "info", fields)
        return (out if isinstance(out, bytes) else out.encode("utf-8", "replace")) + b"\n"

    return render


def render_lines(data: bytes, render: Callable[[dict[str, Any]], bytes]) -> bytes:
    """The access lines for a chunk of written trail lines (other records, and lines that do not parse, are skipped)."""
    out = []
    for line in data.split(b"\n"):
        if not any(a in line for a in ACTIONS):
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        fields = access_fields(rec) if isinstance(rec, dict) else None
        if fields is not None:
            out.append(render(fields))
    return b"".join(out)


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """``data`` cut into pieces of at most ``size`` bytes at line ends (a longer line is a piece of its own)."""
    out = []
    start = 0
    n = len(data)
    while start < n:
        end = start + size
        if end >= n:
            out.append(data[start:])
            break
        cut = data.rfind(b"\n", start, end)
        if cut < start:
            cut = data.find(b"\n", end)
            if cut < 0:
                out.append(data[start:])
                break
        out.append(data[start : cut + 1])
        start = cut + 1
    return out


class AccessLogSink:
    """An audit-writer sink (see sinks.py): renders access lines and writes them to ``fd`` on a thread of its own."""

    name = "access_log"

    def __init__(self, fd: int = 2, *, json: bool | None = None, max_pending: int = MAX_PENDING_BYTES) -> None:
        self.fd = fd
        self.render = renderer(not os.isatty(fd) if json is None else json)
        self.max_pending = max_pending
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_bytes = 0
        self.dropped_lines = 0  # trail lines not rendered because the output was blocked
        self.written_lines = 0
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self.thread.start()

    def write(self, data: bytes) -> None:
        """Queue written trail lines; never blocks (see the module docstring)."""
        with self.cond:
            if self.pending_bytes + len(data) > self.max_pending:
                self.dropped_lines += data.count(b"\n")
                return
            self.pending.append(data)
            self.pending_bytes += len(data)
            self.cond.notify()

    def _take(self) -> bytes | None:
        with self.cond:
            while not self.pending and not self.closing:
                self.cond.wait()
            if not self.pending:
                return None
            data = self.pending.popleft()
            self.pending_bytes -= len(data)
            return data

    def _run(self) -> None:
        reported = 0
        while True:
            data = self._take()
            if data is None:
                return
            try:
                out = render_lines(data, self.render)
                for piece in chunks(out):
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(self.fd, view) :]
                self.written_lines += out.count(b"\n")
            except OSError:
                continue  # stderr closed or broken: the trail is the record, keep going
            except Exception:  # a rendering bug must not end the thread
                log.exception("access_log_render_failed")
                continue
            if self.dropped_lines != reported:
                # Logged once the output moves again, never while it is blocked
                # (that log line would block the same way).
                reported = self.dropped_lines
                log.warning("access_log_lines_dropped", dropped_total=reported, reason="stderr blocked")

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds: a blocked stderr must not hold up shutdown)."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(timeout)
