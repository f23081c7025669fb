"""Optional parts of the gateway that plug into the same chain and lifespan.

A feature contributes routes (mounted behind the whole middleware chain, so
identity, policy, audit and headers apply exactly as for pages), readiness
checks, and start/stop hooks run by the lifespan after the core services
(audit, policy) are up and before they go down.  Adding one is one line in
:func:`build_features`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from gateway.services import Services

ReadinessCheck = Callable[[], tuple[bool, dict[str, object]]]


class Feature(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]: ...

    def readiness(self) -> dict[str, ReadinessCheck]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BaseFeature:
    """Defaults for the hooks a feature does not need."""

    name = "feature"

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness(self) -> dict[str, ReadinessCheck]:
        return {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def build_features(services: "Services") -> list[Feature]:
    """Every optional feature, in start order (stopped in reverse)."""
    from gateway.live import security_tools_features
    from gateway.platform_features import build as platform

    features: list[Feature] = []
    features += platform(services)  # metrics, alerts, jobs, APIs, MCP, guide
    features += security_tools_features(services)  # live feed, audit viewer
    return features
