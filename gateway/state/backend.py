"""The state backend of one process: memory (one process) or Redis (workers, replicas).

:func:`build_state` is called once by ``build_services``; the identity layer
takes its session and counter stores, the audit trail its per-process path
and replica id, and the lifespan runs its monitor (see :mod:`.feature`).
The Redis backend (:mod:`.redis_backend`) is imported only when configured,
so the memory backend runs without the ``redis`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Union

from starlette.middleware import Middleware

from gateway.auth.ratelimit import MemoryCounterStore
from gateway.auth.sessions import MemorySessionStore
from gateway.features import ReadinessCheck
from gateway.settings import ConfigError, Settings

from .health import BackendHealth
from .once import MemoryOneTimeStore
from .replica import HoldsSlot, ReplicaSlot, claim_slot

if TYPE_CHECKING:
    from .redis_backend import RedisState

Emit = Callable[..., None]
VersionSource = Callable[[], "str | None"]


def _no_emit(action: str, *, outcome: str | None = None, **fields: Any) -> None:
    return None


class MemoryState(HoldsSlot):
    """Everything in this process: correct only while it is the only process."""

    backend = "memory"
    shared = False

    def __init__(self, settings: Settings, slot: ReplicaSlot) -> None:
        self.settings = settings
        self.slot = slot
        self.sessions = MemorySessionStore()
        self.counters = MemoryCounterStore()
        self.once = MemoryOneTimeStore()
        self.health: BackendHealth | None = None

    def middleware(self) -> list[Middleware]:
        return []

    def readiness(self) -> dict[str, ReadinessCheck]:
        return {"state": lambda: (True, {"backend": "memory"})}

    async def start(self, policy_version: VersionSource) -> None:
        return None

    async def stop(self) -> None:
        return None

    def release(self) -> None:
        self.slot.release()


State = Union[MemoryState, "RedisState"]


def build_state(settings: Settings, *, emit: Emit | None = None) -> State:
    """The backend ``state.backend`` names, with this process's replica slot."""
    if settings.state.backend == "redis":
        try:
            from .redis_backend import RedisState
        except ImportError as exc:
            if (exc.name or "").split(".")[0] != "redis":
                raise
            raise ConfigError("state.backend", 'needs the redis package: pip install "toolgate[redis]"') from None
        return RedisState(settings, claim_slot(settings), emit=emit or _no_emit)
    return MemoryState(settings, claim_slot(settings))
