"""``gateway healthcheck``: probe the local gateway the way its container does.

The probe reads the same configuration as ``gateway run`` (file and
``GATEWAY_*`` overrides) and derives the address and scheme from it, instead
of a hard-coded ``http://127.0.0.1:8501`` that misses a changed port, a
server bound to one address, or a TLS listener.  It sends a Host the
trusted-host layer accepts (the probe paths would answer on any Host, but a
well-formed request is the one that keeps working if that ever narrows).

Exit 0 when the probe answers 200; 1 otherwise, with one line on stderr
saying what answered (or did not) and, for the refusals a configuration
causes, which key to look at.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from gateway.middleware.trusted_host import TrustedHostMiddleware
from gateway.settings import Settings

LIVENESS, READINESS = "/healthz", "/readyz"

# What the gateway's own refusals mean for a probe from the same host.
_HINTS = {
    403: "this host's loopback address is outside server.allowed_networks",
    503: "not ready: the policy or the audit trail cannot serve; the gateway's log says why",
}


@dataclass(frozen=True)
class Probe:
    url: str
    host_header: str
    verify_tls: bool


def _loopback_for(bind: str) -> str:
    """Where to reach a server bound to ``bind`` from the same host."""
    if bind in ("", "0.0.0.0"):  # noqa: S104 - reading the bind address, not binding
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(bind).version == 6:
            return f"[{bind}]"
    except ValueError:
        pass  # a host name: use it as configured
    return bind


def _host_header(settings: Settings) -> str:
    """A Host the trusted-host layer accepts: the public URL's if served, else one made from the first listed."""
    trusted = settings.server.trusted_hosts  # lower-cased, no trailing dot, never empty (settings)
    public = urlsplit(settings.server.public_url).hostname
    if public and TrustedHostMiddleware(None, allowed_hosts=trusted).allowed(public):
        return public
    first = trusted[0]
    if first == "*":
        return "localhost"
    return "healthcheck" + first[1:] if first.startswith("*.") else first


def build_probe(settings: Settings, *, path: str = LIVENESS) -> Probe:
    server = settings.server
    scheme = "https" if server.tls_cert is not None else "http"
    return Probe(
        url=f"{scheme}://{_loopback_for(server.host)}:{server.port}{path}",
        host_header=_host_header(settings),
        # The probe talks to its own process on this host; the certificate
        # names the public host and may come from a CA this image does not
        # carry, so it is not checked here (nothing crosses a network).
        verify_tls=False,
    )


def run_probe(probe: Probe, *, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, one line describing the answer)."""
    try:
        with httpx.Client(verify=probe.verify_tls, timeout=timeout, follow_redirects=False, trust_env=False) as client:
            resp = client.get(probe.url, headers={"Host": probe.host_header, "Accept": "application/json"})
    except httpx.HTTPError as exc:
        return False, f"{probe.url}: no answer ({type(exc).__name__}: {exc})"
    if resp.status_code == 200:
        return True, f"{probe.url}: 200"
    hint = _HINTS.get(resp.status_code)
    detail = f" ({hint})" if hint else ""
    return False, f"{probe.url} (Host: {probe.host_header}): {resp.status_code}{detail}"
