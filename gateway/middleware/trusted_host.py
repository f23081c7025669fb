"""Refuse requests whose ``Host`` (or websocket ``Origin``) is not ours.

Runs before anything that builds URLs from the host, so a forged Host can
never end up in a redirect, a cookie scope or a password-reset link.  Unlike
Starlette's TrustedHostMiddleware it also checks the ``Origin`` of websocket
handshakes (cross-site websocket hijacking) and answers with the branded 400.

The health probes (``/healthz``, ``/readyz``, exact paths, http only) answer
on any Host: a load balancer's checker may send an address it cannot change,
and nothing in those answers is built from the Host.  They still pass the IP
allowlist and are audited like every request.
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.context import get_context
from gateway.errors import send_error
from gateway.paths import PROBE_PATHS


def split_host(value: str) -> str | None:
    """The lower-case host name of a Host header value, or None if malformed."""
    try:
        parts = urlsplit("//" + value)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.rstrip(".")


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str]) -> None:
        hosts = [h.lower().rstrip(".") for h in allowed_hosts]
        if not hosts:
            raise ValueError("allowed_hosts must not be empty")
        for h in hosts:
            if "*" in h and h != "*" and not (h.startswith("*.") and "*" not in h[2:]):
                raise ValueError(f"bad host pattern {h!r}: only '*' or a leading '*.' is allowed")
        self.app = app
        self.allow_any = "*" in hosts
        self.exact = frozenset(h for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self._verdicts: dict[str, bool] = {}

    def host_allowed(self, host: str) -> bool:
        """``allowed(split_host(host))``, remembered: a gateway sees few distinct Hosts."""
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self.allowed(split_host(host))
            if len(self._verdicts) < 1024:  # bounded: Host is client-chosen
                self._verdicts[host] = verdict
        return verdict

    def allowed(self, hostname: str | None) -> bool:
        if hostname is None:
            return False
        return self.allow_any or hostname in self.exact or hostname.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = scope["type"]
        if t not in ("http", "websocket") or (t == "http" and scope["path"] in PROBE_PATHS):
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        # The request context decided the Host (the first and only one, or a
        # trusted proxy's X-Forwarded-Host); "" means none or several: refused.
        host = ctx.host if ctx else None
        origin = None
        if host is None or t == "websocket":
            for name, value in scope["headers"]:
                if name == b"host" and host is None:
                    host = value.decode("latin-1")
                elif name == b"origin":
                    # Two Origins: this check would read the last while the
                    # app behind it may read the first.  Refused (as "null").
                    origin = value.decode("latin-1") if origin is None else "null"
        host = host or ""
        if not self.host_allowed(host):
            await send_error(scope, receive, send, 400, detail="This host name is not served here.")
            return
        if origin is not None and origin != "null":
            o = urlsplit(origin)
            if o.scheme not in ("http", "https") or not self.allowed(o.hostname):
                await send_error(scope, receive, send, 403, detail="Cross-origin websocket refused.")
                return
        elif origin == "null":
            await send_error(scope, receive, send, 403, detail="Cross-origin websocket refused.")
            return
        await self.app(scope, receive, send)
