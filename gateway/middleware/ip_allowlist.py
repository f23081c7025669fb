"""Only clients from the configured networks get past this point.

The address checked is the one the request-context layer derived (the real
client behind trusted proxies), never a header the client controls.  An
address that does not parse is refused: fail closed.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import send_error
from gateway.middleware.request_context import FORWARDED_ERROR
from gateway.settings import IPNetwork


class IPAllowlistMiddleware:
    def __init__(self, app: ASGIApp, *, networks: Iterable[IPNetwork]) -> None:
        nets = tuple(networks)
        if not nets:
            raise ValueError("networks must not be empty (that would refuse every client)")
        self.app = app
        self.v4 = tuple(n for n in nets if n.version == 4)
        self.v6 = tuple(n for n in nets if n.version == 6)
        self._cache: dict[str, bool] = {}

    def allowed(self, address: str) -> bool:
        hit = self._cache.get(address)
        if hit is not None:
            return hit
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        nets = self.v4 if ip.version == 4 else self.v6
        ok = any(ip in n for n in nets)
        if len(self._cache) < 65536:  # bounded: addresses are attacker-chosen
            self._cache[address] = ok
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        if ctx is not None and ctx.extra.get(FORWARDED_ERROR):
            ctx.decision, ctx.deny_reason = "deny", FORWARDED_ERROR
            await send_error(scope, receive, send, 400, detail="Malformed forwarding headers.")
            return
        address = ctx.client_ip if ctx else (scope.get("client") or ("",))[0]
        if not self.allowed(address):
            if ctx:
                ctx.decision, ctx.deny_reason = "deny", "network_not_allowed"
            await send_error(scope, receive, send, 403, detail="Your network is not allowed to reach this service.")
            return
        await self.app(scope, receive, send)
