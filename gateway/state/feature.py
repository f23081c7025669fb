"""The state backend as a feature: its readiness check and its monitor in the lifespan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.features import BaseFeature, ReadinessCheck

if TYPE_CHECKING:
    from gateway.services import Services

    from .backend import State


class StateFeature(BaseFeature):
    name = "state"

    def __init__(self, state: "State", services: "Services") -> None:
        self.state = state
        self.services = services

    def readiness(self) -> dict[str, ReadinessCheck]:
        return self.state.readiness()

    async def start(self) -> None:
        policy = self.services.policy
        await self.state.start(lambda: policy.version)

    async def stop(self) -> None:
        await self.state.stop()
