"""All of the gateway's own routes as one route in Streamlit's router.

``st.App`` puts user routes in front of its own, and Starlette's router tries
routes one by one, so every request for Streamlit's hot paths (its websocket,
health check and bundles) would first be regex-matched against each gateway
route.  The bundle answers "not mine" with one set/prefix lookup and only
then lets its inner routes match.
"""

from __future__ import annotations

from typing import Sequence

from starlette.routing import BaseRoute, Match, Mount, Router, get_route_path
from starlette.types import Receive, Scope, Send


def _claims(route: BaseRoute) -> tuple[set[str], set[str]]:
    """(exact paths, path prefixes) a route can match."""
    path = getattr(route, "path", None)
    if path is None:
        # An unknown kind of route: claim nothing rather than everything.
        raise TypeError(f"cannot bundle route without a path: {route!r}")
    if isinstance(route, Mount):
        return {path}, {path.rstrip("/") + "/"}
    if "{" in path:
        return set(), {path[: path.index("{")]}
    return {path}, set()


class RouteBundle(BaseRoute):
    """``namespace_prefixes``/``namespace_exact``: paths the gateway owns even
    where no route exists; they get the gateway's 404 instead of falling
    through to Streamlit, which answers every unknown path with its SPA page."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        *,
        namespace_prefixes: Sequence[str] = (),
        namespace_exact: Sequence[str] = (),
    ) -> None:
        self.routes = list(routes)
        self.router = Router(routes=self.routes, redirect_slashes=False)
        exact: set[str] = set()
        prefixes: set[str] = set()
        for route in self.routes:
            e, p = _claims(route)
            exact |= e
            prefixes |= p
        self.exact = frozenset(exact | set(namespace_exact))
        self.prefixes = tuple(sorted(prefixes | set(namespace_prefixes)))
        self.namespace_prefixes = tuple(namespace_prefixes)
        self.namespace_exact = frozenset(namespace_exact)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        path = get_route_path(scope)
        if path not in self.exact and not (self.prefixes and path.startswith(self.prefixes)):
            return Match.NONE, {}
        best = Match.NONE
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {}
            if match is Match.PARTIAL:
                best = Match.PARTIAL
        if best is Match.NONE and (path in self.namespace_exact or path.startswith(self.namespace_prefixes)):
            return Match.FULL, {}  # ours, but nothing here: the inner router answers 404
        return best, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"RouteBundle({len(self.routes)} routes)"
