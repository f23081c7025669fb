"""Limits on a request's head (size and time) and body (stalls), enforced before any ASGI code runs.

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
  Request Timeout`` and the connection is closed.  A request body may not
  stall for more than ``body_timeout_s`` between reads (the slow-POST
  variant), unless it is the gateway that stopped reading.  Between requests
  uvicorn's keep-alive timeout applies as before.

A request that arrives whole in one read (nearly every request) costs a few
attribute checks: no timer is armed for it.  Refusals are logged and audited
as ``http.connection_refused`` with the TCP peer's address (behind a proxy,
the proxy's: nothing of the request was believed yet).  A connection that
never sent a byte is closed without either: browsers open spare connections.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import runtime
from gateway.context import SCOPE_KEY
from gateway.settings import ServerSettings

log = structlog.get_logger(__name__)

# Whole responses: the connection is closed right after.
_REFUSALS = {
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
}

# Where the limits ride on uvicorn's Config: it is pickled whole into each
# worker process, and uvicorn builds one protocol per connection from it.
_LIMITS_ATTR = "toolgate_connection_limits"
PROTOCOL_PATH = "gateway.http_protocol:GuardedHttpToolsProtocol"


@dataclass(frozen=True)
class ConnectionLimits:
    # The configuration's defaults (server.max_header_bytes, ...), stated once there.
    max_head_bytes: int = ServerSettings.max_header_bytes
    head_timeout_s: float = ServerSettings.header_timeout_s
    body_timeout_s: float = ServerSettings.body_timeout_s

    @classmethod
    def of(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(max_head_bytes=server.max_header_bytes, head_timeout_s=server.header_timeout_s, body_timeout_s=server.body_timeout_s)


def set_connection_limits(config: Any, limits: ConnectionLimits) -> None:
    """Give connections served with ``config`` these limits (``config.http`` must be PROTOCOL_PATH)."""
    setattr(config, _LIMITS_ATTR, limits)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Where a request begins is read off uvicorn's own state after each read
    (a new cycle means a head was completed; its ``more_body`` says whether a
    body is still to come); where it ends, from the parser's message-complete
    callback, the only one overridden."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, _LIMITS_ATTR, None) or ConnectionLimits()
        self._in_head = True  # the bytes arriving now belong to a request head
        self._in_body = False  # a request's body is still to come
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far, for a terminator split across reads
        self._body_seen = 0.0  # when body bytes last arrived
        self._timer: asyncio.TimerHandle | None = None  # the head's deadline, or the body's idle check

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never completes its first head, or never sends one.
        self._arm(self.limits.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # How much of this read is head: up to the blank line that ends it
            # (which may straddle the previous read), or all of it.  Checked
            # before the parser sees any of it.
            probe = self._tail + data if self._tail else data
            end = probe.find(b"\r\n\r\n")
            head_part = len(data) if end < 0 else end + 4 - len(self._tail)
            if self._head_bytes + head_part > self.limits.max_head_bytes:
                self._refuse(431, "head_too_large", head_bytes=self._head_bytes + head_part)
                return
            self._head_bytes += head_part
            self._tail = probe[-3:] if end < 0 else b""
        elif self._in_body:
            self._body_seen = self.loop.time()
        before, was_body = self.cycle, self._in_body
        HttpToolsProtocol.data_received(self, data)
        cycle = self.cycle
        if cycle is not before:
            # A head was completed: a request began.  (A pipelined head that
            # starts in this same read is counted from its next read.)  A new
            # cycle's more_body is exact here: its application has not run yet.
            self._head_bytes, self._tail = 0, b""
            if self._timer is not None:
                self._disarm()
            self._in_body = cycle.more_body
            self._in_head = not cycle.more_body
        elif was_body and not self._in_body and self._timer is not None:
            self._disarm()  # its body is complete (see on_message_complete)
        if self._timer is None and ((self._in_head and self._head_bytes) or self._in_body):
            # Most requests arrive whole in one read and never get here; these
            # are the ones spread over reads: bound their time.
            if self._in_body:
                self._body_seen = self.loop.time()
                self._arm(self.limits.body_timeout_s, self._body_idle)
            else:
                self._arm(self.limits.head_timeout_s, self._head_timed_out)

    def on_message_complete(self) -> None:
        # Overridden (unlike the other parser callbacks) because uvicorn's
        # leaves no trace when the response was already complete: a body the
        # application never read still ends here, and what follows is a head.
        HttpToolsProtocol.on_message_complete(self)
        self._in_body, self._in_head = False, True

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ours(self) -> bool:
        """Whether the connection is still this protocol's (not closed, not upgraded to a websocket)."""
        return not self.transport.is_closing() and self.transport.get_protocol() is self

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_head and self._ours():
            self._refuse(408, "head_timeout", head_bytes=self._head_bytes)

    def _body_idle(self) -> None:
        self._timer = None
        if not self._in_body or not self._ours():
            return
        idle = self.loop.time() - self._body_seen
        if self.flow.read_paused or idle < self.limits.body_timeout_s:
            # Reading is paused because the application has not taken what
            # came (not the client's doing), or bytes came since: look again.
            self._arm(max(self.limits.body_timeout_s - idle, 0.1), self._body_idle)
            return
        self._report(408, "body_timeout", idle_s=round(idle, 1))
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_REFUSALS[408])
        if cycle is not None:
            cycle.disconnected = True  # the application's receive() sees the client gone
            # The request's own audit record says why it ended (its status is
            # what the application answered; the client got the 408).
            ctx = cycle.scope.get(SCOPE_KEY)
            if ctx is not None and not ctx.deny_reason:
                ctx.deny_reason = "body_timeout"
        self.transport.close()

    def _refuse(self, status: int, reason: str, **fields: Any) -> None:
        self._disarm()
        if self._head_bytes or status != 408:
            self._report(status, reason, **fields)
        self.transport.write(_REFUSALS[status])
        self.transport.close()

    def _report(self, status: int, reason: str, **details: Any) -> None:
        client = self.client[0] if self.client else None
        log.warning("http.connection_refused", status=status, reason=reason, client=client, **details)
        services = runtime.maybe_current()
        if services is not None:  # None only outside a gateway (a bare uvicorn in a test)
            services.emit("http.connection_refused", outcome="failure", client_ip=client, status=status, reason=reason, details=details)
