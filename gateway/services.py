"""Everything the gateway runs, built once from settings and started in order.

The app factory asks this container for its middleware, routes and readiness
checks; the lifespan starts and stops the parts in one place, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import structlog
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gateway.settings import Settings

log = structlog.get_logger(__name__)


def _first_key_line(path: Any) -> bytes:
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.encode()
    raise ValueError(f"{path}: no key found")


@dataclass
class Services:
    settings: Settings
    streamlit_secret: bytes
    started: bool = False
    _stoppers: list[Callable[[], Any]] = field(default_factory=list)

    def emit(self, action: str, *, outcome: str | None = None, **fields: Any) -> None:
        log.info(action, outcome=outcome, **fields)

    def page_allowed(self, user: Any, tool: Any) -> bool:
        return True

    def page_denied(self, user: Any, tool: Any) -> None:
        self.emit("page.denied", user=user.name, tool=tool.id, client_ip=user.ip, decision="deny")

    def access_contact(self, tool: Any) -> str:
        return tool.contact or self.settings.server.access_contact

    def audit_middleware(self) -> list[Middleware]:
        return []

    def identity_middleware(self) -> list[Middleware]:
        return []

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness_checks(self) -> dict[str, Callable[[], tuple[bool, dict[str, object]]]]:
        return {}

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.emit("gateway.start")

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self.emit("gateway.stop")


def build_services(settings: Settings) -> Services:
    return Services(settings=settings, streamlit_secret=_first_key_line(settings.session.keys_file))
