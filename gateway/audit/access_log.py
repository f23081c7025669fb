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
from collections.abc import Callable
from typing import Any

import orjson
import structlog

LOGGER_NAME = "gateway.access"
log = structlog.get_logger(LOGGER_NAME)

_ACCESS_ACTIONS = ("http.request", "websocket.session")
# How the actions appear in a written line: a byte search skips the other
# records without parsing them.
_HTTP, _WS = (b'"action":"%s"' % a.encode() for a in _ACCESS_ACTIONS)
# Written bytes waiting for the output thread; past this, whole batches are
# dropped (and counted) instead of queued.
MAX_PENDING_BYTES = 4 * 1024 * 1024
# One os.write per chunk of at most this many bytes, cut at line ends: writes
# of up to PIPE_BUF bytes to a pipe are atomic, so the gateway's own log lines
# (another process, the same pipe) never land inside one of ours.
CHUNK_BYTES = 4096


_EMPTY: dict[str, Any] = {}


def access_fields(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The access-log line's fields for one trail record, or None for records that are not accesses.

    The records come from the writer's own output, so their shape is known;
    anything else (a value of another type where a section should be) makes
    the record unusable here, never an exception.
    """
    try:
        event = rec["event"]
        action = event["action"]
        if action not in _ACCESS_ACTIONS:
            return None
        http = rec.get("http", _EMPTY)
        req = http.get("request", _EMPTY)
        resp = http.get("response", _EMPTY)
        status = resp.get("status_code")
        out: dict[str, Any] = {
            "event": action,
            "level": "error" if type(status) is int and status >= 500 else "info",
            "logger": LOGGER_NAME,
        }
        # Absent values are left out rather than printed as null.
        if (v := rec.get("@timestamp")) is not None:
            out["timestamp"] = v
        if (v := req.get("method")) is not None:
            out["method"] = v
        if (v := rec.get("url", _EMPTY).get("path")) is not None:
            out["path"] = v
        if status is not None:
            out["status"] = status
        if (v := resp.get("body", _EMPTY).get("bytes")) is not None:
            out["bytes"] = v
        if type(v := event.get("duration")) is int:  # nanoseconds
            out["duration_ms"] = (v + 500) // 1000 / 1000
        if (v := rec.get("client", _EMPTY).get("ip")) is not None:
            out["client_ip"] = v
        if (v := rec.get("user", _EMPTY).get("name")) is not None:
            out["user"] = v
        gw = rec.get("gateway", _EMPTY)
        if (v := gw.get("decision")) is not None:
            out["decision"] = v
        if (v := gw.get("rule_id")) is not None:
            out["rule_id"] = v
        if (v := req.get("id")) is not None:
            out["request_id"] = v
        if (v := rec.get("user_agent", _EMPTY).get("original")) is not None:
            out["user_agent"] = v
    except (KeyError, TypeError, AttributeError):
        return None
    return out


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
        if _HTTP not in line and _WS not in line:
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
