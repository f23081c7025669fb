"""Limits on the request head, enforced before any ASGI code runs.

uvicorn's httptools protocol puts no bound on a request's head: a single
connection can send a header line hundreds of megabytes long and the parser
keeps all of it in memory (seen: one 200 MiB header took the gateway from
210 MB to 625 MB), and a connection that sends a head slowly, or nothing at
all after connecting, is held open for ever (slowloris).  The h11 limit in
uvicorn's config does not apply to httptools.

:class:`GuardedHttpToolsProtocol` adds both bounds:

- **Size.** The bytes of the head (request line and headers, up to the blank
  line that ends it) are counted as they arrive, before the parser sees them;
  past ``max_head_bytes`` the connection gets ``431 Request Header Fields Too
  Large`` and is closed.  (A pipelined request that starts in the same read
  as the one before it is counted from its next read: at most one read more.)
- **Time.** A head must be complete within ``head_timeout_s`` of its first
  byte (or of the connection, for the first request); otherwise ``408
  Request Timeout`` and the connection is closed.  Between requests uvicorn's
  keep-alive timeout applies as before.

A head that arrives whole in one read (nearly every request) costs two
attribute checks: no timer is armed for it.  Refusals are logged with the
peer's address; they never reach the application, so there is no request
to audit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT_S = 30.0

_REFUSALS = {
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\n",
}


# Where the limits ride on uvicorn's Config: it is pickled whole into each
# worker process, and uvicorn builds one protocol per connection from it.
_LIMITS_ATTR = "toolgate_head_limits"
PROTOCOL_PATH = "gateway.http_protocol:GuardedHttpToolsProtocol"


def set_head_limits(config: Any, *, max_head_bytes: int, head_timeout_s: float) -> None:
    """Give connections served with ``config`` these limits (``config.http`` must be PROTOCOL_PATH)."""
    setattr(config, _LIMITS_ATTR, (int(max_head_bytes), float(head_timeout_s)))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_head_bytes, self.head_timeout_s = getattr(config, _LIMITS_ATTR, (DEFAULT_MAX_HEAD_BYTES, DEFAULT_HEAD_TIMEOUT_S))
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far, for a terminator split across reads
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never completes its first head, or never sends one.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        # How much of this read is head: up to the blank line that ends it
        # (which may straddle the previous read), or all of it.  Checked
        # before the parser sees any of it.
        probe = self._tail + data if self._tail else data
        end = probe.find(b"\r\n\r\n")
        head_part = len(data) if end < 0 else end + 4 - len(self._tail)
        if self._head_bytes + head_part > self.max_head_bytes:
            self._refuse(431, "head_too_large", head_bytes=self._head_bytes + head_part)
            return
        self._head_bytes += head_part
        self._tail = probe[-3:] if end < 0 else b""
        super().data_received(data)
        if self._in_head and self._head_bytes and self._head_timer is None and not self.transport.is_closing():
            self._arm_head_timer()  # a head spread over reads: bound its time

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what follows on this connection is the next head

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "head_timeout", head_bytes=self._head_bytes)

    def _refuse(self, status: int, reason: str, **fields: Any) -> None:
        self._cancel_head_timer()
        if self._head_bytes or status != 408:
            log.warning("http.head_refused", status=status, reason=reason, client=self.client[0] if self.client else None, **fields)
        self.transport.write(_REFUSALS[status] + b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()

