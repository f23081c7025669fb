"""Secondary sinks: copies of each written line to stdout and/or syslog, and the access log.

The JSONL file is the record of truth; these copies ship the trail (with its
chain values) off the host, which is also what anchors the chain head against
an attacker who truncates the current file (see docs/audit-events.md).  A
failing secondary sink is counted and logged, never makes the trail unhealthy.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from gateway.settings import AuditSettings, ConfigError

from .access_log import AccessLogSink

LOG_AUTHPRIV = 10
LOG_INFO = 6


class StdoutSink:
    """Write the lines to the process's stdout (container log collectors pick it up)."""

    name = "stdout"

    def write(self, data: bytes) -> None:
        out = sys.stdout
        raw = getattr(out, "buffer", None)
        if raw is not None:
            out.flush()
            raw.write(data)
            raw.flush()
        else:
            out.write(data.decode("utf-8"))
            out.flush()

    def close(self) -> None:
        pass


def parse_syslog_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """``/dev/log`` (a unix socket path) or ``host:port`` / ``host`` (UDP, port 514)."""
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "514")
    host = host.strip("[]")
    try:
        port_n = int(port)
    except ValueError:
        raise ConfigError("audit.syslog_address", f"expected /path/to/socket or host:port, got {address!r}") from None
    return socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port_n)


class SyslogSink:
    """One RFC 3164 datagram per record: ``<86>toolgate-audit: {json}`` (authpriv.info)."""

    name = "syslog"

    def __init__(self, address: str, *, ident: str = "toolgate-audit", facility: int = LOG_AUTHPRIV) -> None:
        self.family, self.address = parse_syslog_address(address)
        self.prefix = f"<{facility * 8 + LOG_INFO}>{ident}: ".encode()
        self.sock: socket.socket | None = None
        try:
            self._connect()
        except OSError as exc:
            raise ConfigError("audit.syslog_address", f"cannot reach syslog at {address}: {exc.strerror or exc}") from None

    def _connect(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def write(self, data: bytes) -> None:
        if self.sock is None:
            self._connect()
        assert self.sock is not None
        prefix = self.prefix
        try:
            for line in data.split(b"\n"):
                if line:
                    self.sock.send(prefix + line)
        except OSError:
            # Reconnect on the next batch (syslogd restarted, socket replaced).
            self.sock.close()
            self.sock = None
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def build_sinks(settings: AuditSettings) -> list[Any]:
    """The sinks ``settings`` switch on, in the writer that will use them (thread or process)."""
    sinks: list[Any] = []
    try:
        if settings.stdout:
            sinks.append(StdoutSink())
        if settings.syslog:
            sinks.append(SyslogSink(settings.syslog_address))
        if settings.access_log:
            sinks.append(AccessLogSink())
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def close_sinks(sinks: list[Any]) -> None:
    for s in sinks:
        s.close()
