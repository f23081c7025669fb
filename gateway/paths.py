"""Which paths exist, and which of them anyone may reach without signing in.

Streamlit answers every unknown path with its SPA page and 200, so the
gateway decides what exists: the tool pages from the registry, the gateway's
own routes, and the prefixes Streamlit serves.  Anything else is a 404.
"""

from __future__ import annotations

import posixpath
from functools import lru_cache
from pathlib import Path

from gateway.tools import tool_for_path

# Health probes.  Load balancers reach them over plain http and with a Host of
# their own choosing (an AWS ALB sends the target's address and cannot be
# told otherwise), so they are exempt from the https redirect and the
# trusted-host check; their answers carry no URL, cookie or Host-derived text.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})

# Reachable without a session: health probes, crawler rules, the sign-in flow
# and the static assets those pages need.
PUBLIC_EXACT = frozenset(
    {
        "/healthz",
        "/readyz",
        "/robots.txt",
        "/.well-known/security.txt",
        "/auth/login",
        "/auth/logout",
        "/auth/callback",
        "/auth/oidc/start",
    }
)
PUBLIC_PREFIXES = ("/_gateway/static/",)

# The user guide is signed-in only unless the configuration opens it
# (``platform.docs_public``); set once at start-up by the docs feature.
DOCS_EXACT, DOCS_PREFIX = "/docs", "/docs/"
_docs_public = False


def set_docs_public(enabled: bool) -> None:
    global _docs_public
    _docs_public = bool(enabled)

# The gateway's sign-in routes (public; the only readers of the pre-session cookies).
AUTH_PREFIX = "/auth/"

# Gateway routes that need a signed-in (or token-bearing) user.
GATEWAY_PREFIXES = ("/api/", "/ws/", "/mcp", "/docs/", "/metrics")
GATEWAY_EXACT = frozenset({"/docs", "/metrics", "/sitemap.xml", "/manifest.webmanifest"})

# Paths Streamlit itself serves.  The agent API stays off and unreachable.
STREAMLIT_PREFIXES = ("/_stcore/", "/static/", "/media/", "/component/")
STREAMLIT_BLOCKED_PREFIXES = ("/_stcore/agent",)


@lru_cache(maxsize=1)
def streamlit_root_files() -> frozenset[str]:
    """Top-level files of Streamlit's frontend (favicon.png, manifest.json, …)."""
    import streamlit

    static = Path(streamlit.__file__).parent / "static"
    return frozenset("/" + p.name.lower() for p in static.iterdir() if p.is_file() and p.name != "index.html")


def canonical_path(path: str) -> str:
    """Dot segments resolved, duplicate slashes and a trailing slash removed.

    Case and encoding are left alone (Streamlit's asset names are
    case-sensitive); the policy layer lower-cases for its own matching.
    """
    if not path.startswith("/"):
        path = "/" + path
    path = path.replace("\\", "/")
    canon = posixpath.normpath(path)
    if canon.startswith("//"):  # normpath keeps a leading double slash (POSIX)
        canon = "/" + canon.lstrip("/")
    return canon


def is_public(path: str) -> bool:
    if path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES):
        return True
    return _docs_public and (path == DOCS_EXACT or path.startswith(DOCS_PREFIX))


def classify(path: str) -> str:
    """One of ``public``, ``page``, ``gateway``, ``streamlit``, ``unknown``.

    ``path`` is the normalised, lower-cased path the policy sees.
    """
    if is_public(path):
        return "public"
    if tool_for_path(path) is not None:
        return "page"
    if path in GATEWAY_EXACT or path.startswith(GATEWAY_PREFIXES):
        return "gateway"
    if path.startswith(STREAMLIT_BLOCKED_PREFIXES):
        return "unknown"
    if path.startswith(STREAMLIT_PREFIXES) or path in streamlit_root_files():
        return "streamlit"
    return "unknown"
