"""The platform features (issue 8), in start order: the ones that watch come first.

Metrics and alerts subscribe to the audit trail before anything else starts
emitting; the periodic jobs report through alerts; the APIs, the MCP server
(its session manager runs from here, inside the gateway's lifespan) and the
user guide come last.  Stopped in reverse.  The FastAPI data API and the MCP
server are optional extras: without their packages they are left out with a
log line, and ``platform.api`` / ``platform.mcp`` switch them off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from gateway.errors import error_response
from gateway.features import BaseFeature

if TYPE_CHECKING:
    from gateway.features import Feature
    from gateway.services import Services

log = structlog.get_logger(__name__)


class NotFound:
    """The branded 404 as an ASGI app (an object, so ``Route`` does not wrap it as a view)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(scope, 404)(scope, receive, send)


not_found = NotFound()


class Absent(BaseFeature):
    """A switched-off feature's paths answer 404.

    They are gateway paths (the policy may allow them), and without a route
    Streamlit would answer them with its app page.
    """

    def __init__(self, name: str, prefix: str) -> None:
        self.name = f"{name}-off"
        self.prefix = prefix

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return [Route(self.prefix, not_found, methods=methods), Mount(self.prefix, app=not_found)]


def build(services: "Services") -> list["Feature"]:
    from gateway.alerts import AlertsFeature
    from gateway.api.routes import ApiFeature
    from gateway.background import BackgroundFeature
    from gateway.metrics import MetricsFeature
    from gateway.site import SiteFeature

    p = services.settings.platform
    alerts = AlertsFeature(services)
    features: list[Feature] = [MetricsFeature(services), alerts, BackgroundFeature(services, alerts), ApiFeature(services)]
    rest: Feature = Absent("rest-api", "/api/v1")
    if p.api:
        try:
            from gateway.api.rest import RestApiFeature

            rest = RestApiFeature(services)
        except ImportError as exc:  # fastapi / fastapi-offline not installed
            log.warning("feature_unavailable", feature="rest-api", reason=str(exc), hint="pip install 'toolgate[api]'")
    mcp: Feature = Absent("mcp", "/mcp")
    if p.mcp:
        try:
            from gateway.api.mcp_server import McpFeature

            mcp = McpFeature(services)
        except ImportError as exc:  # mcp not installed
            log.warning("feature_unavailable", feature="mcp", reason=str(exc), hint="pip install 'toolgate[mcp]'")
    features += [rest, mcp]
    features.append(SiteFeature(services))
    return features
