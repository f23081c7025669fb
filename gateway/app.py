"""``create_app(settings)``: Streamlit's ``st.App`` behind the gateway's chain.

The whole request path is visible in :func:`build_chain`, outermost first.
Streamlit's own middleware (path security, its session cookie, gzip) sits
inside ours, so the gateway sees and decides every request first, http and
websocket alike.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import structlog
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gateway import runtime, streamlit_config
from gateway.errors import error_response
from gateway.middleware.body_limit import BodyLimitMiddleware
from gateway.middleware.error_boundary import ErrorBoundaryMiddleware
from gateway.middleware.https_redirect import HTTPSRedirectMiddleware
from gateway.middleware.ip_allowlist import IPAllowlistMiddleware
from gateway.middleware.request_context import RequestContextMiddleware
from gateway.middleware.security_headers import SecurityHeadersMiddleware
from gateway.middleware.trusted_host import TrustedHostMiddleware
from gateway.paths import AUTH_PREFIX, GATEWAY_EXACT, GATEWAY_PREFIXES
from gateway.route_bundle import RouteBundle
from gateway.routes import core_routes
from gateway.services import Services, build_services
from gateway.settings import Settings

log = structlog.get_logger(__name__)

TOOLS_SCRIPT = Path(__file__).resolve().parent.parent / "tools_ui" / "app.py"


def build_chain(services: Services) -> list[Middleware]:
    """The middleware chain, outermost first: the one place its order lives."""
    s = services.settings.server
    chain = [
        # 1. request id, real client IP behind trusted proxies, scheme/host
        Middleware(RequestContextMiddleware, trusted_proxies=s.trusted_proxies),
        # 2. audit: one event per request / websocket session
        *services.audit_middleware(),
        # 3. hardening headers on everything below, errors included
        Middleware(SecurityHeadersMiddleware, https=s.https),
        # plain http is redirected to https when the browser-facing URL is https
        *([Middleware(HTTPSRedirectMiddleware, public_url=s.public_url)] if s.public_url.startswith("https://") else []),
        # crashes below become the branded 500 (hardened and audited above)
        Middleware(ErrorBoundaryMiddleware),
        # 4. unknown Host (and cross-origin websocket) refused first
        Middleware(TrustedHostMiddleware, allowed_hosts=s.trusted_hosts),
        # 5. network allowlist
        Middleware(IPAllowlistMiddleware, networks=s.allowed_networks),
        # 6. body size limit, streamed
        Middleware(BodyLimitMiddleware, max_body_bytes=s.max_body_bytes),
        # 7.-9. session, authentication (+ identity headers), authorization
        *services.identity_middleware(),
    ]
    return chain


def _exception_handlers() -> dict[Any, Any]:
    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return error_response(request.scope, status if 400 <= status < 600 else 500)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(request.scope, 500)

    from starlette.exceptions import HTTPException

    return {HTTPException: http_error, 500: server_error}


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    freeze_heap: bool = False,
) -> Any:
    """Build the gateway: ``st.App`` for ``tools_ui/app.py`` wrapped in the chain.

    ``extra_routes`` are mounted behind the whole chain like the gateway's own
    (an embedding application's APIs); they get no exemption from policy.

    ``freeze_heap`` (the servers set it; a process that builds many apps, like
    the test suite, must not): once started, move everything alive into the
    collector's permanent generation.  The gateway starts with a large heap
    (Streamlit, pandas, pyarrow, the policy index), and every full collection
    walked all of it: ~100 ms pauses several times a minute under load, the
    whole of the p99 on ``/``.  Frozen, a full collection sees only what was
    made since.
    """
    import streamlit as st

    services = services or build_services(settings)
    streamlit_config.apply(settings, services.streamlit_secret)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        runtime.install(services)
        await services.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
            log.info("gc.heap_frozen", objects=gc.get_freeze_count())
        try:
            yield {"services": services}
        finally:
            await services.stop()
            runtime.install(None)

    app = st.App(
        TOOLS_SCRIPT,
        lifespan=lifespan,
        routes=[
            RouteBundle(
                [*core_routes(settings, services.readiness_checks()), *services.routes(), *extra_routes],
                namespace_prefixes=(*GATEWAY_PREFIXES, AUTH_PREFIX, "/_gateway/"),
                namespace_exact=GATEWAY_EXACT,
            )
        ],
        middleware=build_chain(services),
        exception_handlers=_exception_handlers(),
    )
    # The pages reach the services before the first lifespan event in tests
    # that drive the ASGI app directly.
    runtime.install(services)
    return app
