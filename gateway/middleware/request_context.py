"""Request id, real client address, and the scheme and host the client used.

``X-Forwarded-*`` and an inbound ``X-Request-ID`` are believed only when the
TCP peer is a configured trusted proxy; from anyone else they are ignored, so
a client cannot choose the address the IP allowlist and the audit trail see.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import SCOPE_KEY, RequestContext
from gateway.settings import IPNetwork

FORWARDED_ERROR = "malformed_forwarded_for"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
# The request headers this layer reads; a browser sends a dozen others, and
# one set lookup per header passes them over cheaper than the comparisons.
_READ = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"host", b"user-agent"})


class ForwardedHeaderError(ValueError):
    pass


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class _RandomPool:
    """128-bit random ids from the OS CSPRNG, read in bulk.

    One ``getrandom`` call per 256 ids instead of one per request: each call
    releases the GIL, and with the audit writer thread runnable that hand-off
    costs far more than the random bytes themselves.
    """

    CHUNK = 16 * 256

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def hex16(self) -> str:
        pos = self._pos
        if pos + 16 > len(self._buf):
            self._buf, pos = os.urandom(self.CHUNK), 0
        self._pos = pos + 16
        return self._buf[pos : pos + 16].hex()


_pool = _RandomPool()
# A forked worker must not hand out the ids its parent already buffered.
os.register_at_fork(after_in_child=lambda: _pool.__init__())


def new_request_id() -> str:
    return _pool.hex16()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[IPNetwork] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)
        self._peers: dict[str, str] = {}

    def _trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted_proxies)

    def client_ip(self, peer: str, forwarded_for: list[str]) -> str:
        """The right-most address in the chain that is not a trusted proxy."""
        if not forwarded_for or not self.trusted_proxies:
            return self._peer_address(peer)
        try:
            peer_ip = _parse_ip(peer)
        except ValueError:
            return peer  # a unix socket or test client name; never trusted
        if not self._trusted(peer_ip):
            return str(peer_ip)
        hops = [h for value in forwarded_for for h in value.split(",")]
        candidate = peer_ip
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            try:
                candidate = _parse_ip(hop)
            except ValueError:
                # A trusted proxy never writes garbage; if a hop we reached is
                # not an address we cannot know who the client is.
                raise ForwardedHeaderError(f"malformed X-Forwarded-For hop {hop[:64]!r}") from None
            if not self._trusted(candidate):
                return str(candidate)
        return str(candidate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        forwarded_for: list[str] = []
        fwd_proto = fwd_host = inbound_id = host = user_agent = ""
        hosts = 0
        for name, value in [h for h in scope["headers"] if h[0] in _READ]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                fwd_proto = value.decode("latin-1")
            elif name == b"x-forwarded-host":
                fwd_host = value.decode("latin-1")
            elif name == b"x-request-id":
                inbound_id = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
                hosts += 1
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")[:512]

        if hosts > 1:
            # RFC 9112 §3.2: 400 for more than one Host.  The layers below read
            # the first (Starlette's Headers.get) while this loop keeps the
            # last, so a pair could pass the trusted-host check with one name
            # and reach the tools with the other.  No host: the check refuses.
            host = ""
        client = scope.get("client")
        peer = client[0] if client else ""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        ctx = RequestContext(request_id=new_request_id(), client_ip=peer, scheme=scheme, host=host)
        ctx.user_agent = user_agent
        scope[SCOPE_KEY] = ctx

        try:
            ctx.client_ip = self.client_ip(peer, forwarded_for)
        except ForwardedHeaderError:
            # Unknown client: the IP allowlist refuses it (with the headers and
            # audit record every other refusal gets).
            ctx.client_ip = ""
            ctx.extra[FORWARDED_ERROR] = True

        if self._peer_is_proxy(peer):
            if inbound_id and _REQUEST_ID_RE.match(inbound_id):
                ctx.request_id = inbound_id
            proto = fwd_proto.split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                ctx.scheme = proto
            if fwd_host:
                ctx.host = fwd_host.split(",")[-1].strip()
        # Downstream (Streamlit included) sees the real client address.
        if client:
            scope["client"] = (ctx.client_ip, client[1])

        await self.app(scope, receive, self._with_request_id(ctx, send))

    def _peer_address(self, peer: str) -> str:
        """The peer in canonical form (IPv4-mapped IPv6 unwrapped), remembered."""
        known = self._peers.get(peer)
        if known is None:
            try:
                known = str(_parse_ip(peer))
            except ValueError:
                known = peer  # a unix socket or test client name; never trusted
            if len(self._peers) < 4096:
                self._peers[peer] = known
        return known

    def _peer_is_proxy(self, peer: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            return self._trusted(_parse_ip(peer))
        except ValueError:
            return False

    @staticmethod
    def _with_request_id(ctx: RequestContext, send: Send) -> Send:
        # The one send wrapper that watches the response for every layer:
        # inner layers read ctx.status / ctx.bytes_sent / ctx.response_started
        # instead of each wrapping send again (each wrapper costs on every
        # message of every request).
        async def send_with_id(message: Message) -> None:
            t = message["type"]
            if t == "http.response.body":
                ctx.bytes_sent += len(message.get("body", b""))
            elif t == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append((b"x-request-id", ctx.request_id.encode()))
                message["headers"] = headers
                ctx.status = message["status"]
                ctx.response_started = True
            elif t in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
                ctx.response_started = True
                if t == "websocket.close" and ctx.status is None:
                    ctx.status = 403 if not ctx.extra.get("ws_accepted") else None
                elif t == "websocket.accept":
                    ctx.extra["ws_accepted"] = True
            await send(message)

        return send_with_id
